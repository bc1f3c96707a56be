"""Storing profile photos: checked and re-encoded like every upload, private to their owner.

The upload has already been decoded by :func:`jiansuo.web.catalog.forms.read_photo` (the checks
every upload gets: size limit, real image, not truncated, no decompression bomb). Here it is
cropped to a centred square, shrunk and written as a fresh metadata-free JPEG by
:func:`jiansuo.web.catalog.photos.encode_jpeg`, under a random name; the user's previous photo
is removed.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from PIL import Image

from jiansuo.atomic import atomic_write
from jiansuo.web.catalog.photos import encode_jpeg

from .models import Profile

#: Stored profile photos are squares this many pixels wide (shown at 28 px in the header, 96 on the
#: account page, so even 3x screens get sharp ones).
PROFILE_SIDE = 288


def profile_photo_dir() -> Path:
    return Path(settings.JIANSUO_PROFILE_PHOTO_DIR)


def profile_photo_path(profile: Profile | None) -> Path | None:
    """The stored photo file of ``profile``, or None when it has none (or the file is gone)."""
    if profile is None or not profile.photo_token:
        return None
    path = profile_photo_dir() / profile.photo
    return path if path.is_file() else None


def get_profile(user: AbstractBaseUser) -> Profile | None:
    """The user's profile, or None (anonymous users and users who never set a photo have none)."""
    if not user.is_authenticated:
        return None
    return Profile.objects.filter(user=user).first()


def save_profile_photo(user: AbstractBaseUser, img: Image.Image) -> Profile:
    """Make the decoded image ``img`` the user's profile photo, replacing (and deleting) the old one."""
    w, h = img.size
    side = min(w, h)
    square = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    name = f"{secrets.token_hex(16)}.jpg"
    atomic_write(profile_photo_dir() / name, encode_jpeg(square, PROFILE_SIDE))
    with transaction.atomic():
        profile, _ = Profile.objects.select_for_update().get_or_create(user=user)
        old = profile.photo
        profile.photo = name
        profile.save()
    _delete_file(old)
    return profile


def remove_profile_photo(user: AbstractBaseUser) -> bool:
    """Remove the user's profile photo; False when there was none."""
    profile = get_profile(user)
    if profile is None or not profile.photo:
        return False
    old, profile.photo = profile.photo, ""
    profile.save(update_fields=["photo", "updated"])
    _delete_file(old)
    return True


def _delete_file(name: str) -> None:
    # Only names this module made: the database value never becomes a path outside the folder.
    if name and Profile(photo=name).photo_token:
        (profile_photo_dir() / name).unlink(missing_ok=True)


@receiver(post_delete, sender=Profile, dispatch_uid="jiansuo-profile-photo-file")
def _profile_deleted(sender, instance: Profile, **kwargs) -> None:
    # Also runs when the user is deleted (the profile goes with it).
    transaction.on_commit(lambda: _delete_file(instance.photo))
