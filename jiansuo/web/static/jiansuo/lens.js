// Jiansuo: the results page's lens. The searched part of the shopper's photo is a box over it;
// drag the box to move it, a corner to resize it, or anywhere else to draw a new one. On release
// the page opens the same results URL with the new ?box=x0,y0,x1,y1 (fractions of the photo).
// Pointer Events, so a mouse, a pen and a finger all work. Without this script the page shows the
// box it was given and its results.
(function () {
  "use strict";

  const MIN_PX = 8;  // a smaller box is a click or a slip, not a box: keep the old one
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  function setUp(lens) {
    const boxEl = lens.querySelector("[data-lens-box]");
    const parsed = (lens.dataset.box || "").split(",").map(Number);
    const initial = parsed.length === 4 && parsed.every(isFinite) ? parsed : null;
    let box = initial;   // [x0, y0, x1, y1] or null (the whole photo)
    let drag = null;     // what the pointer is doing: {mode, anchor, start, from}

    function draw() {
      boxEl.hidden = !box;
      if (!box) return;
      const [x0, y0, x1, y1] = box;
      Object.assign(boxEl.style, {left: x0 * 100 + "%", top: y0 * 100 + "%",
                                  width: (x1 - x0) * 100 + "%", height: (y1 - y0) * 100 + "%"});
    }

    // The pointer as fractions of the photo, kept on the photo.
    function at(e) {
      const r = lens.getBoundingClientRect();
      return [clamp((e.clientX - r.left) / r.width, 0, 1), clamp((e.clientY - r.top) / r.height, 0, 1)];
    }

    // The box between two corners, whichever way they were dragged.
    const spanning = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];

    function start(e) {
      if (drag || (e.pointerType === "mouse" && e.button !== 0)) return;
      e.preventDefault();
      const p = at(e);
      const corner = e.target.closest("[data-corner]");
      if (box && corner) {
        // Resize: the opposite corner stays where it is.
        const c = corner.dataset.corner;
        drag = {mode: "resize", anchor: [c.includes("w") ? box[2] : box[0], c.includes("n") ? box[3] : box[1]]};
      } else if (box && e.target.closest("[data-lens-box]")) {
        drag = {mode: "move", start: p, from: box.slice()};
      } else {
        drag = {mode: "draw", anchor: p};
      }
      drag.id = e.pointerId;
      drag.before = box;
      // Keep receiving the pointer when it leaves the photo (or the window) mid-drag.
      try { lens.setPointerCapture(e.pointerId); } catch (err) { /* a pointer the browser no longer tracks */ }
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", end);
      window.addEventListener("pointercancel", cancel);
    }

    function move(e) {
      if (!drag || e.pointerId !== drag.id) return;
      e.preventDefault();
      const p = at(e);
      if (drag.mode === "move") {
        const [x0, y0, x1, y1] = drag.from;
        const dx = clamp(p[0] - drag.start[0], -x0, 1 - x1), dy = clamp(p[1] - drag.start[1], -y0, 1 - y1);
        box = [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
      } else {
        box = spanning(drag.anchor, p);
      }
      draw();
    }

    function stop() {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", end);
      window.removeEventListener("pointercancel", cancel);
      const before = drag.before;
      drag = null;
      return before;
    }

    function cancel(e) {
      if (!drag || e.pointerId !== drag.id) return;
      box = stop();
      draw();
    }

    function end(e) {
      if (!drag || e.pointerId !== drag.id) return;
      move(e);
      const before = stop();
      const r = lens.getBoundingClientRect();
      const tooSmall = !box || (box[2] - box[0]) * r.width < MIN_PX || (box[3] - box[1]) * r.height < MIN_PX;
      const unchanged = before && box && box.every((v, i) => v.toFixed(4) === before[i].toFixed(4));
      if (tooSmall || unchanged) { box = before; draw(); return; }
      // The same results (filters kept) for the new part of the photo.
      const url = new URL(window.location.href);
      url.searchParams.set("box", box.map((v) => v.toFixed(4)).join(","));
      lens.classList.add("busy");
      window.location.assign(url.toString());
    }

    lens.addEventListener("pointerdown", start);
    lens.classList.add("ready");
    const hint = lens.closest("figure").querySelector("[data-lens-hint]");
    if (hint) hint.hidden = false;
    draw();
  }

  document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-lens]").forEach(setUp));
})();
