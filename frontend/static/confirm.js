// Forms marked data-confirm ask before they are sent: a deletion cannot be undone.
(function () {
  document.addEventListener("submit", function (event) {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
