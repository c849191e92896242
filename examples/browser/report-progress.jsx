import React from "react";
import { useJob } from "underway/react";

/** A live progress bar for one job: `<ReportProgress jobId={job.id} />`. */
export function ReportProgress({ jobId, token, baseUrl = "/api" }) {
  const { progress, status, error } = useJob(jobId, { baseUrl, token });
  if (error) return <p role="alert">{error.message}</p>;
  return (
    <div>
      <progress max="100" value={progress?.percent ?? 0} />
      <span>{progress?.message} ({status ?? "connecting"})</span>
    </div>
  );
}
