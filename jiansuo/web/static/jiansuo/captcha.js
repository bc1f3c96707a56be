// Jiansuo: the captcha's "New picture" button and inline audio. Without JavaScript the page still
// works: a link reloads the form with a new picture and the audio link downloads the sound file.
(function () {
  "use strict";

  function setUp(box) {
    const form = box.closest("form");
    const image = box.querySelector("[data-captcha-image]");
    const refresh = box.querySelector("[data-captcha-refresh]");
    const audio = box.querySelector("[data-captcha-audio]");
    const key = form.querySelector("input[type=hidden][name$=_0]");
    const answer = form.querySelector("input[type=text][name$=_1]");
    refresh.hidden = false;
    refresh.addEventListener("click", async () => {
      refresh.disabled = true;
      try {
        // The library's refresh view answers only requests marked as made by a script.
        const response = await fetch(box.dataset.refreshUrl, {headers: {"X-Requested-With": "XMLHttpRequest"}});
        if (!response.ok) return;
        const fresh = await response.json();
        image.src = fresh.image_url;
        key.value = fresh.key;
        if (audio && fresh.audio_url) audio.href = fresh.audio_url;
        answer.value = "";
        answer.focus();
      } finally {
        refresh.disabled = false;
      }
    });
    if (audio) {
      audio.addEventListener("click", (e) => {
        e.preventDefault();
        new Audio(audio.href).play();
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-captcha]").forEach(setUp);
  });
})();
