// The models page: start a training run, follow the active one (phase, progress,
// time left) every 1.5 s, cancel it, and promote a candidate by hand. Every POST
// carries the page's CSRF token; the page reloads when a run ends, so its
// tables show the new version.
(function () {
  const box = document.getElementById("training");
  if (!box) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const message = document.getElementById("training-message");
  const retrain = document.getElementById("retrain");
  const panel = document.getElementById("active-run");
  let activeId = box.dataset.active || null;

  async function post(url) {
    const response = await fetch(url, {
      method: "POST", headers: {"X-CSRFToken": csrf, Accept: "application/json"}});
    let body = {};
    try { body = await response.json(); } catch (error) { /* an empty or HTML answer */ }
    return {ok: response.ok, body};
  }

  function left(seconds) {
    if (seconds == null) return "";
    const s = Math.max(0, Math.round(seconds));
    return s >= 60 ? `about ${Math.floor(s / 60)} min ${s % 60} s left` : `about ${s} s left`;
  }

  function draw(run) {
    panel.hidden = false;
    retrain.disabled = true;
    document.getElementById("run-status").textContent =
      run.cancel_requested ? `${run.status} (cancelling)` : run.status;
    document.getElementById("run-phase").textContent = run.phase || "";
    document.getElementById("run-eta").textContent = left(run.eta_seconds);
    document.getElementById("run-progress").value = run.progress || 0;
  }

  async function poll() {
    try {
      const response = await fetch(box.dataset.runs, {headers: {Accept: "application/json"}});
      if (response.ok) {
        const runs = (await response.json()).runs;
        const active = runs.find((run) => run.status === "queued" || run.status === "running");
        if (active) {
          activeId = active.id;
          draw(active);
        } else if (activeId) {
          return location.reload(); // it ended: the tables below change
        }
      }
    } catch (error) { /* the site is restarting: try again */ }
    setTimeout(poll, 1500);
  }

  retrain.addEventListener("click", async () => {
    retrain.disabled = true;
    const {ok, body} = await post(box.dataset.start);
    if (ok) {
      activeId = body.id;
      draw(body);
      message.textContent = "Run queued.";
    } else {
      retrain.disabled = false;
      message.textContent = `Not started: ${body.error || "the site did not answer"}`;
    }
  });

  document.getElementById("cancel-run").addEventListener("click", async () => {
    if (!activeId) return;
    const {ok, body} = await post(`${box.dataset.runs}/${activeId}/cancel`);
    message.textContent = ok ? "Cancel requested." : `Not cancelled: ${body.error}`;
  });

  document.querySelectorAll("button.promote").forEach((button) => {
    button.addEventListener("click", async () => {
      button.disabled = true;
      const {ok, body} = await post(button.dataset.url);
      if (ok) return location.reload();
      button.disabled = false;
      message.textContent = `Not promoted: ${body.error || "the site did not answer"}`;
    });
  });

  poll();
})();
