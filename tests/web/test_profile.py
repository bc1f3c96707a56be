"""The profile photo: checked and re-encoded like every upload, shown small in the header, private, removable."""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, TestCase
from django.urls import reverse
from PIL import Image, PngImagePlugin

from jiansuo.web.accounts.models import Profile
from jiansuo.web.accounts.profile import PROFILE_SIDE
from tests.conftest import real_photo

from .support import IsolatedSiteMixin, jpeg_bytes

_AVATAR = re.compile(r'<img class="avatar" src="(/accounts/photo/[0-9a-f]{32}\.jpg)"')


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG header announcing far more pixels than the limit (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


class ProfilePhotoTests(IsolatedSiteMixin, TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.user = User.objects.create_user("mei", "mei@example.com", "a-long-enough-secret-9")
        cls.other = User.objects.create_user("nan", "nan@example.com", "a-long-enough-secret-9")

    def setUp(self):
        # The class shares one folder while each test's database changes are rolled back.
        shutil.rmtree(settings.JIANSUO_PROFILE_PHOTO_DIR, ignore_errors=True)
        self.client.force_login(self.user)

    def upload(self, data: bytes, name: str = "me.jpg", content_type: str = "image/jpeg", client: Client | None = None):
        return (client or self.client).post(reverse("set_profile_photo"),
                                            {"photo": SimpleUploadedFile(name, data, content_type=content_type)})

    def stored_files(self) -> list[Path]:
        folder = Path(settings.JIANSUO_PROFILE_PHOTO_DIR)
        return sorted(folder.glob("*")) if folder.exists() else []

    def avatar_url(self, client: Client | None = None) -> str | None:
        match = _AVATAR.search((client or self.client).get(reverse("catalog:home")).content.decode())
        return match.group(1) if match else None

    def test_upload_is_reencoded_as_a_square_jpeg_and_shown_in_the_header(self):
        self.assertIsNone(self.avatar_url())
        self.assertContains(self.client.get(reverse("account")), "No profile photo yet")
        # A wide PNG carrying a text chunk, under a hostile file name.
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "<script>alert(1)</script>")
        buf = io.BytesIO()
        real_photo("astronaut").resize((600, 400)).save(buf, "PNG", pnginfo=info)
        response = self.upload(buf.getvalue(), "../../etc/passwd.png", "image/png")
        self.assertRedirects(response, reverse("account"))
        [stored] = self.stored_files()
        self.assertRegex(stored.name, r"^[0-9a-f]{32}\.jpg$")
        data = stored.read_bytes()
        self.assertTrue(data.startswith(b"\xff\xd8"))
        self.assertNotIn(b"<script>", data)
        with Image.open(stored) as img:
            self.assertEqual((img.format, img.size), ("JPEG", (PROFILE_SIDE, PROFILE_SIDE)))
            self.assertEqual(img.info.get("exif"), None)
        # Shown small in the header of every page, and on the account page.
        url = self.avatar_url()
        self.assertEqual(url, reverse("profile_photo", args=[stored.stem]))
        self.assertContains(self.client.get(reverse("account")), f'src="{url}"')
        photo = self.client.get(url)
        self.assertEqual((photo.status_code, photo["Content-Type"]), (200, "image/jpeg"))
        self.assertEqual(b"".join(photo.streaming_content), data)
        self.assertIn("private", photo["Cache-Control"])

    def test_a_small_photo_is_not_enlarged(self):
        self.upload(jpeg_bytes(real_photo("coffee").resize((90, 60))))
        with Image.open(self.stored_files()[0]) as img:
            self.assertEqual(img.size, (60, 60))

    def test_hostile_files_are_refused_and_the_current_photo_kept(self):
        self.upload(jpeg_bytes(real_photo("chelsea")))
        [kept] = self.stored_files()
        good = jpeg_bytes(real_photo("rocket"))
        hostile = {
            "empty": (b"", "empty.jpg", "image/jpeg", "The submitted file is empty"),
            "truncated": (good[:len(good) // 3], "cut.jpg", "image/jpeg", "truncated"),
            "text": (b"this is a text file, not a photo\n" * 20, "note.jpg", "image/jpeg", "not a usable image"),
            "bomb": (bomb_png(), "bomb.png", "image/png", "decompression bomb"),
            "too large": (b"\xff\xd8" + b"\0" * (settings.JIANSUO_MAX_UPLOAD_BYTES + 10), "big.jpg", "image/jpeg",
                          "too large"),
        }
        for what, (data, name, content_type, message) in hostile.items():
            with self.subTest(what):
                response = self.upload(data, name, content_type)
                self.assertEqual(response.status_code, 400)
                self.assertContains(response, message, status_code=400)
                self.assertEqual(self.stored_files(), [kept])
        self.assertEqual(self.avatar_url(), reverse("profile_photo", args=[kept.stem]))

    def test_empty_form_is_refused(self):
        response = self.client.post(reverse("set_profile_photo"), {})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(self.stored_files(), [])

    def test_a_new_photo_replaces_the_old_one(self):
        self.upload(jpeg_bytes(real_photo("chelsea")))
        first = self.avatar_url()
        self.upload(jpeg_bytes(real_photo("coffee")))
        second = self.avatar_url()
        self.assertNotEqual(first, second)
        self.assertEqual(len(self.stored_files()), 1)
        self.assertEqual(self.client.get(first).status_code, 404)
        self.assertEqual(self.client.get(second).status_code, 200)

    def test_remove(self):
        self.upload(jpeg_bytes(real_photo("chelsea")))
        url = self.avatar_url()
        self.assertEqual(self.client.get(reverse("remove_profile_photo")).status_code, 405)
        self.assertRedirects(self.client.post(reverse("remove_profile_photo")), reverse("account"))
        self.assertEqual(self.stored_files(), [])
        self.assertIsNone(self.avatar_url())
        self.assertEqual(self.client.get(url).status_code, 404)
        self.assertEqual(Profile.objects.get(user=self.user).photo, "")

    def test_only_its_owner_sees_it(self):
        self.upload(jpeg_bytes(real_photo("chelsea")))
        url = self.avatar_url()
        other = Client()
        other.force_login(self.other)
        self.assertEqual(other.get(url).status_code, 404)
        self.assertIsNone(self.avatar_url(other))
        anonymous = Client().get(url)
        self.assertEqual(anonymous.status_code, 302)
        self.assertTrue(anonymous.url.startswith(reverse("login")))
        # The other user's upload and removal touch only their own photo.
        self.upload(jpeg_bytes(real_photo("coffee")), client=other)
        other.post(reverse("remove_profile_photo"))
        self.assertEqual(self.avatar_url(), url)
        self.assertEqual(len(self.stored_files()), 1)

    def test_upload_needs_a_signed_in_user_and_post(self):
        anonymous = self.upload(jpeg_bytes(real_photo("chelsea")), client=Client())
        self.assertTrue(anonymous.url.startswith(reverse("login")))
        self.assertEqual(self.client.get(reverse("set_profile_photo")).status_code, 405)
        self.assertEqual(self.stored_files(), [])

    def test_deleting_the_user_deletes_the_photo(self):
        self.upload(jpeg_bytes(real_photo("chelsea")))
        self.assertEqual(len(self.stored_files()), 1)
        with self.captureOnCommitCallbacks(execute=True):
            self.user.delete()
        self.assertEqual(self.stored_files(), [])

    def test_chinese_page(self):
        self.client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
        page = self.client.get(reverse("account"))
        self.assertContains(page, "头像")
        self.assertContains(page, "尚未设置头像")
        self.assertContains(page, "保存头像")
        self.upload(jpeg_bytes(real_photo("chelsea")))
        page = self.client.get(reverse("account"))
        self.assertContains(page, "删除头像")
        self.assertContains(page, "头像已保存。")
        refused = self.upload(b"not a photo", "x.jpg")
        self.assertContains(refused, "不是可用的图片", status_code=400)
