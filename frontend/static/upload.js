// Drag and drop onto the file picker, and previews of what will be sent.
// The form works without this script; it only makes choosing nicer.
(function () {
  const drop = document.getElementById("drop");
  const input = document.getElementById("images");
  const previews = document.getElementById("previews");
  const form = document.getElementById("upload");

  function show(files) {
    previews.replaceChildren();
    for (const file of files) {
      const figure = document.createElement("figure");
      const caption = document.createElement("figcaption");
      caption.textContent = file.name;
      if (file.type.startsWith("image/")) {
        const img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.alt = file.name;
        img.onload = () => URL.revokeObjectURL(img.src);
        figure.append(img);
      }
      figure.append(caption);
      previews.append(figure);
    }
  }

  input.addEventListener("change", () => show(input.files));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    input.files = event.dataTransfer.files;
    show(input.files);
  });
  form.addEventListener("submit", () => {
    const button = document.getElementById("send");
    button.disabled = true;
    button.textContent = "Sending…";
  });
})();
