// The roll-out form of the models page: PUTs the whole state to the admin API
// (with the page's CSRF token) and reloads to show it; the API's refusal (a
// version not loaded, a share out of range) is shown as it is.
(function () {
  const box = document.getElementById("rollout");
  if (!box) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const message = document.getElementById("rollout-message");
  const form = document.getElementById("rollout-form");

  async function put(url, body) {
    const response = await fetch(url, {
      method: "PUT", body: JSON.stringify(body),
      headers: {"X-CSRFToken": csrf, "Content-Type": "application/json",
                Accept: "application/json"}});
    let answer = {};
    try { answer = await response.json(); } catch (error) { /* not JSON */ }
    if (response.ok) { window.location.reload(); return; }
    message.textContent = answer.error || `refused (HTTP ${response.status})`;
  }

  const version = (value) => (value === "" || value == null ? null : Number(value));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = form.elements;
    const pinned = f.mode.value === "pinned";
    const canary = pinned ? version(f.canary.value) : null;
    put(box.dataset.url, {
      mode: f.mode.value,
      stable: pinned ? version(f.stable.value) : null,
      canary,
      canary_share: canary === null ? 0 : Number(f.canary_share.value) / 100,
      shadow: pinned ? version(f.shadow.value) : null,
    });
  });

  for (const id of ["promote-canary", "stop-canary"]) {
    const button = document.getElementById(id);
    if (button) button.addEventListener("click", () => put(box.dataset.url, {
      mode: "pinned", stable: version(button.dataset.stable), canary: null,
      canary_share: 0, shadow: version(button.dataset.shadow)}));
  }

  document.getElementById("auto-canary").addEventListener("change", (event) =>
    put(box.dataset.autoUrl, {enabled: event.target.checked}));
})();
