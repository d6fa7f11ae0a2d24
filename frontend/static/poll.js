// Result and batch pages: ask the JSON API until the work is finished, then
// reload, so the page itself (rendered by the server) shows the outcome.
(function () {
  const single = document.getElementById("result");
  const batch = document.getElementById("batch");

  async function waitForResult() {
    for (;;) {
      try {
        // A long poll: the server answers as soon as the result is in.
        const response = await fetch(single.dataset.poll + "?wait=25");
        if (response.ok) {
          const body = await response.json();
          if (body.status === "done" || body.status === "failed") return location.reload();
        } else if (response.status < 500) {
          return;
        }
      } catch (error) { /* offline for a moment: try again */ }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  async function followBatch() {
    const bar = document.getElementById("progress");
    const text = document.getElementById("progress-text");
    for (;;) {
      try {
        const response = await fetch(batch.dataset.poll);
        if (response.ok) {
          const body = await response.json();
          bar.max = body.total;
          bar.value = body.finished;
          text.textContent = `${body.finished} of ${body.total} done` +
            (body.counts.failed ? ` (${body.counts.failed} failed)` : "");
          if (body.complete) return location.reload();
        }
      } catch (error) { /* try again */ }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  if (single && ["queued", "running"].includes(single.dataset.status)) waitForResult();
  if (batch && batch.dataset.complete === "no") followBatch();
})();
