import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// The React hook's tests (test/*.test.js) in jsdom; test/*.test.mjs are node:test's.
export default defineConfig({
  // The docs' examples (examples/browser/) import the package by its name, as an app would.
  resolve: {
    alias: {
      "underway/react": fileURLToPath(new URL("./underway-react.js", import.meta.url)),
      react: fileURLToPath(new URL("./node_modules/react", import.meta.url)),
    },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.js"],
    testTimeout: 20000,
    hookTimeout: 30000,
  },
});
