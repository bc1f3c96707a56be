// Jiansuo: photo upload by file picker, drag and drop, or paste; preview; then submit.
// Plain JavaScript, no build step. Without it the forms still work (choose a file, press Search).
(function () {
  "use strict";

  function firstImage(files) {
    for (const f of files || []) if (f.type.startsWith("image/")) return f;
    return null;
  }

  function setUp(form) {
    const input = form.querySelector("input[type=file]");
    const zone = form.querySelector("[data-dropzone]");
    const preview = form.querySelector(".dz-preview");
    const icon = form.querySelector(".dz-icon");
    const status = form.querySelector("[data-status]");
    const maxBytes = Number(form.dataset.maxBytes || 0);

    function use(file) {
      if (!file) { status.textContent = form.dataset.msgNotImage; return; }
      if (maxBytes && file.size > maxBytes) { status.textContent = form.dataset.msgTooLarge; return; }
      // Put the file in the real input so the ordinary form submission sends it.
      if (input.files[0] !== file) {
        const dt = new DataTransfer();
        dt.items.add(file);
        input.files = dt.files;
      }
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      if (icon) icon.style.display = "none";
      status.textContent = form.dataset.msgSearching;
      form.classList.add("busy");
      form.requestSubmit ? form.requestSubmit() : form.submit();
    }

    input.addEventListener("change", () => { if (input.files.length) use(firstImage(input.files)); });
    ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => {
      e.preventDefault(); zone.classList.add("dragging");
    }));
    ["dragleave", "dragend"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("dragging")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); e.stopPropagation(); zone.classList.remove("dragging");
      use(firstImage(e.dataTransfer.files));
    });
    return use;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const forms = Array.from(document.querySelectorAll("form[data-upload]"));
    const handlers = forms.map(setUp);
    // Paste anywhere on the page searches with the first upload form (not while typing in a field).
    document.addEventListener("paste", (e) => {
      if (!handlers.length || (e.target.closest && e.target.closest("input, textarea, select"))) return;
      const file = firstImage(e.clipboardData && e.clipboardData.files);
      if (file) { e.preventDefault(); handlers[0](file); }
    });
    // A drop outside a drop zone must not navigate away to the dropped file.
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      if (handlers.length) handlers[0](firstImage(e.dataTransfer.files));
    });
    // Product page thumbnails switch the main photo.
    const main = document.querySelector("[data-main-photo]");
    document.querySelectorAll("[data-photo]").forEach((b) => b.addEventListener("click", () => { main.src = b.dataset.photo; }));
  });
})();
