"""The registration and password-reset captcha: django-simple-captcha, drawn and checked on this site.

Nothing leaves the server: the picture is drawn by Pillow with the font the library ships, the
optional audio version is spoken by ``flite`` (see ``CAPTCHA_FLITE_PATH`` in the settings).
"""

from __future__ import annotations

import secrets

from captcha.conf import settings as captcha_settings
from captcha.fields import CaptchaField
from django.utils.translation import gettext_lazy as _

# Letters and digits that cannot be mistaken for one another in the distorted picture or when spoken
# (no I/1/L/7, O/0/Q, S/5, Z/2, B/8, G/6).
ALPHABET = "ACDEFHJKMNPRTUVWXY349"


def challenge() -> tuple[str, str]:
    """A new challenge as (text drawn, expected answer); ``CAPTCHA_CHALLENGE_FUNCT`` points here.

    The library's default uses the ``random`` module, which its image view re-seeds with the
    (public) captcha key; ``secrets`` keeps the answer unpredictable whatever that does.
    """
    text = "".join(secrets.choice(ALPHABET) for _ in range(captcha_settings.CAPTCHA_LENGTH))
    return text, text.lower()


def captcha_field() -> CaptchaField:
    """The form field: the picture, an answer box, a refresh button and (with flite) an audio link."""
    return CaptchaField(
        label=_("Characters in the picture"),
        help_text=_("Type the characters you see; capitals or not, either is fine."),
        error_messages={
            "invalid": _("Those are not the characters in the picture. Please type the ones in the new picture."),
            "required": _("Please type the characters in the picture."),
            "incomplete": _("Please type the characters in the picture."),
        },
    )
