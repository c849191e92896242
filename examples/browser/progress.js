import { submit } from "/assets/underway.js";

const bar = document.querySelector("#report");

document.querySelector("#start").addEventListener("click", async () => {
  const job = await submit("report", { pages: 20 }); // POST /api/jobs: the job, at once
  bar.setAttribute("job-id", job.id); // the bar follows it live
});

bar.addEventListener("underway-end", (event) => {
  document.querySelector("#done").textContent = `The report ${event.detail.status}.`;
});
