// The review queue: one photo at a time; keys 1-9 pick a class, Enter sends the
// review to the JSON API and shows the next photo without a page load.
(function () {
  const root = document.getElementById("reviewer");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const photo = document.getElementById("review-photo");
  const answer = document.getElementById("review-answer");
  const top = document.getElementById("review-top");
  const buttons = document.getElementById("review-classes");
  const status = document.getElementById("review-status");
  const counts = {};
  const seen = new Set();
  let queue = [];
  let current = null;
  let choice = -1;
  let busy = false;
  let done = 0;

  const pct = (score) => `${(score * 100).toFixed(1)}%`;

  function drawCounts() {
    const table = document.getElementById("review-counts");
    table.querySelectorAll("tr:not(:first-child)").forEach((row) => row.remove());
    for (const name of Object.keys(counts).sort()) {
      const row = table.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = counts[name];
    }
    document.getElementById("review-session").textContent = done;
  }

  function pick(index) {
    if (!current || index < 0 || index >= current.classes.length) return;
    choice = index;
    buttons.querySelectorAll("button").forEach((button, i) => {
      button.setAttribute("aria-checked", String(i === index));
    });
  }

  function show(record) {
    current = record;
    root.dataset.record = record.id;
    photo.src = record.image_url;
    photo.alt = record.filename;
    answer.textContent = `The model says ${record.label} (${pct(record.confidence)})` +
      (record.uncertain ? ", not sure" : "");
    top.replaceChildren(...record.top_k.slice(0, 3).map((t) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = t.label;
      const meter = document.createElement("span");
      meter.className = "meter";
      const bar = document.createElement("span");
      bar.style.width = pct(t.score);
      meter.append(bar);
      const value = document.createElement("span");
      value.className = "pct";
      value.textContent = pct(t.score);
      item.append(name, meter, value);
      return item;
    }));
    buttons.replaceChildren(...record.classes.map((name, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("role", "radio");
      button.textContent = i < 9 ? `${i + 1} ${name}` : name;
      button.addEventListener("click", () => pick(i));
      return button;
    }));
    pick(record.classes.indexOf(record.label));
    if (queue[0]) new Image().src = queue[0].image_url; // the next photo, ahead of time
  }

  async function load() {
    const response = await fetch(root.dataset.queue, {headers: {Accept: "application/json"}});
    const body = await response.json();
    if (!response.ok) {
      status.textContent = body.error;
      return;
    }
    Object.assign(counts, body.reviewed_per_class);
    drawCounts();
    document.getElementById("queue-total").textContent = `${body.total} to review`;
    queue = body.records.filter((record) => !seen.has(record.id));
    if (queue.length) next(); else finish();
  }

  function next() {
    const record = queue.shift();
    if (record) show(record); else load();
  }

  function finish() {
    current = null;
    delete root.dataset.record;
    root.hidden = true;
    document.getElementById("review-empty").hidden = false;
  }

  async function send() {
    if (!current || busy || choice < 0) return;
    busy = true;
    const record = current;
    const label = record.classes[choice];
    try {
      const response = await fetch(root.dataset.review.replace("RECORD", record.id), {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf,
                  Accept: "application/json"},
        body: JSON.stringify({label}),
      });
      const body = await response.json();
      if (!response.ok) {
        status.textContent = `Not saved: ${body.error}`;
        return;
      }
      seen.add(record.id);
      counts[label] = (counts[label] || 0) + 1;
      done += 1;
      drawCounts();
      status.textContent = `Saved ${record.filename}: ${label}` +
        (label === record.label ? " (right)" : ` (the model said ${record.label})`);
      next();
    } catch (error) {
      status.textContent = "Not saved: the site did not answer; press Enter to try again";
    } finally {
      busy = false;
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea, summary, a, #filters")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (/^[1-9]$/.test(event.key)) {
      pick(Number(event.key) - 1);
      event.preventDefault();
    } else if (event.key === "Enter") {
      event.preventDefault();
      send();
    }
  });

  load();
})();
