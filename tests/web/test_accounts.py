"""Accounts: register, log in and out, change and reset the password, API tokens, the captcha."""

from __future__ import annotations

import io
import re
import shutil
from unittest import skipUnless

from captcha.models import CaptchaStore
from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail
from django.test import TestCase
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token

from .support import CaptchaTestMode, captcha_key, solved_captcha


class AccountTests(CaptchaTestMode, TestCase):
    password = "a-long-enough-secret-9"

    def register(self, **data):
        """POST the registration form, its captcha solved (test mode)."""
        return self.client.post(reverse("register"), {**solved_captcha(self.client.get(reverse("register"))), **data})

    def make_user(self, name: str = "carol") -> User:
        return User.objects.create_user(name, f"{name}@example.com", self.password)

    def test_register_logs_the_new_user_in(self):
        page = self.client.get(reverse("register"))
        self.assertContains(page, 'name="password1"')
        self.assertContains(page, 'name="captcha_1"')
        response = self.client.post(reverse("register"), {
            "username": "dave", "email": "dave@example.com", "password1": self.password, "password2": self.password,
            **solved_captcha(page),
        }, follow=True)
        self.assertRedirects(response, reverse("catalog:home"))
        self.assertEqual(response.context["user"].username, "dave")
        self.assertContains(response, "Welcome, dave")
        self.assertContains(response, 'name="image"')  # may search now

    def test_register_rejects_taken_names_and_weak_or_mismatched_passwords(self):
        self.make_user("erin")
        taken = self.register(username="erin", password1=self.password, password2=self.password)
        self.assertEqual(taken.status_code, 400)
        self.assertContains(taken, "already exists", status_code=400)
        mismatch = self.register(username="frank", password1=self.password, password2=self.password + "x")
        self.assertContains(mismatch, "didn’t match", status_code=400)
        weak = self.register(username="gina", password1="12345678", password2="12345678")
        self.assertContains(weak, "too common", status_code=400)
        self.assertFalse(User.objects.filter(username__in=["frank", "gina"]).exists())

    def test_login_and_logout(self):
        self.make_user()
        bad = self.client.post(reverse("login"), {"username": "carol", "password": "wrong"})
        self.assertContains(bad, "correct username and password")
        response = self.client.post(reverse("login"), {"username": "carol", "password": self.password})
        self.assertRedirects(response, reverse("catalog:home"))
        self.assertEqual(self.client.get(reverse("account")).status_code, 200)
        self.assertEqual(self.client.get(reverse("logout")).status_code, 405)  # logging out takes a POST
        self.assertRedirects(self.client.post(reverse("logout")), reverse("catalog:home"))
        self.assertEqual(self.client.get(reverse("account")).status_code, 302)

    def test_login_returns_to_the_page_asked_for(self):
        self.make_user()
        target = reverse("catalog:product", args=["x-1"])
        redirect = self.client.get(target)
        self.assertEqual(redirect.url, f"{reverse('login')}?next={target}")
        response = self.client.post(redirect.url, {"username": "carol", "password": self.password, "next": target})
        self.assertEqual(response.url, target)

    def test_change_password(self):
        user = self.make_user()
        self.assertEqual(self.client.get(reverse("password_change")).status_code, 302)
        self.client.force_login(user)
        response = self.client.post(reverse("password_change"), {
            "old_password": self.password,
            "new_password1": "another-long-secret-7", "new_password2": "another-long-secret-7",
        })
        self.assertRedirects(response, reverse("password_change_done"))
        user.refresh_from_db()
        self.assertTrue(user.check_password("another-long-secret-7"))
        wrong_old = self.client.post(reverse("password_change"), {
            "old_password": "nope", "new_password1": "third-long-secret-5", "new_password2": "third-long-secret-5",
        })
        self.assertContains(wrong_old, "old password was entered incorrectly")

    def test_password_reset_mail_in_the_readers_language(self):
        user = self.make_user()
        self.client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
        form = self.client.get(reverse("password_reset"))
        self.assertContains(form, "图片中的字符")
        response = self.client.post(reverse("password_reset"), {"email": "carol@example.com", **solved_captcha(form)})
        self.assertRedirects(response, reverse("password_reset_done"))
        self.assertEqual(len(mail.outbox), 1)
        message = mail.outbox[0]
        self.assertEqual(message.to, ["carol@example.com"])
        self.assertEqual(message.subject, "设置您的检索新密码")
        self.assertIn("carol，您好", message.body)
        link = re.search(r"http://testserver(/accounts/reset/\S+/)", message.body).group(1)
        form = self.client.get(link, follow=True)
        self.assertContains(form, 'name="new_password1"')
        done = self.client.post(form.redirect_chain[-1][0], {"new_password1": "reset-long-secret-3",
                                                             "new_password2": "reset-long-secret-3"})
        self.assertRedirects(done, reverse("password_reset_complete"))
        user.refresh_from_db()
        self.assertTrue(user.check_password("reset-long-secret-3"))

    def test_api_token_page(self):
        user = self.make_user()
        self.client.force_login(user)
        self.assertNotContains(self.client.get(reverse("account")), "data-token")
        self.assertEqual(self.client.get(reverse("new_token")).status_code, 405)
        self.client.post(reverse("new_token"))
        first = Token.objects.get(user=user).key
        self.assertContains(self.client.get(reverse("account")), first)
        self.client.post(reverse("new_token"))
        self.assertNotEqual(Token.objects.get(user=user).key, first)


class CaptchaTests(CaptchaTestMode, TestCase):
    """Registration and password reset need the captcha, in English and in Chinese."""

    password = "a-long-enough-secret-9"

    def signup(self, page, answer: str | None, name: str = "hana"):
        data = {"username": name, "password1": self.password, "password2": self.password}
        if answer is not None:
            data |= {"captcha_0": captcha_key(page), "captcha_1": answer}
        return self.client.post(reverse("register"), data)

    def test_registration_needs_the_captcha_in_both_languages(self):
        for lang, required, wrong, label in [
            ("en", "Please type the characters in the picture.", "Those are not the characters in the picture",
             "Characters in the picture"),
            ("zh-hans", "请输入图片中的字符。", "输入的字符与图片不符", "图片中的字符"),
        ]:
            with self.subTest(lang=lang):
                self.client.post(reverse("set_language"), {"language": lang, "next": "/"})
                page = self.client.get(reverse("register"))
                self.assertContains(page, label)
                self.assertContains(page, 'name="captcha_1"')
                self.assertContains(page, "data-captcha-refresh")
                self.assertContains(self.signup(page, None), required, status_code=400)
                self.assertContains(self.signup(page, ""), required, status_code=400)
                self.assertContains(self.signup(page, "WRONG"), wrong, status_code=400)
                self.assertFalse(User.objects.filter(username="hana").exists())
                # A refused answer also shows a new picture (each picture may be tried once).
                retry = self.signup(page, "WRONG")
                self.assertNotEqual(captcha_key(retry), captcha_key(page))
                self.assertRedirects(self.signup(retry, "PASSED", name=f"hana-{lang}"), reverse("catalog:home"))
                self.assertTrue(User.objects.filter(username=f"hana-{lang}").exists())
                self.client.post(reverse("logout"))

    def test_password_reset_needs_the_captcha_in_both_languages(self):
        User.objects.create_user("ivan", "ivan@example.com", self.password)
        for lang, wrong, subject in [("en", "Those are not the characters in the picture",
                                      "Choose a new password for Jiansuo"),
                                     ("zh-hans", "输入的字符与图片不符", "设置您的检索新密码")]:
            with self.subTest(lang=lang):
                mail.outbox.clear()
                self.client.post(reverse("set_language"), {"language": lang, "next": "/"})
                form = self.client.get(reverse("password_reset"))
                self.assertContains(form, 'name="captcha_1"')
                missing = self.client.post(reverse("password_reset"), {"email": "ivan@example.com"})
                self.assertEqual(missing.status_code, 200)
                self.assertFalse(missing.context["form"].is_valid())
                refused = self.client.post(reverse("password_reset"), {
                    "email": "ivan@example.com", "captcha_0": captcha_key(form), "captcha_1": "nope"})
                self.assertContains(refused, wrong)
                self.assertEqual(mail.outbox, [])
                done = self.client.post(reverse("password_reset"), {"email": "ivan@example.com",
                                                                    **solved_captcha(refused)})
                self.assertRedirects(done, reverse("password_reset_done"))
                self.assertEqual([m.subject for m in mail.outbox], [subject])

    def test_the_picture_and_a_new_one(self):
        page = self.client.get(reverse("register"))
        key = captcha_key(page)
        image = self.client.get(reverse("captcha-image", args=[key]))
        self.assertEqual(image["Content-Type"], "image/png")
        with Image.open(io.BytesIO(image.content)) as picture:
            self.assertEqual(picture.format, "PNG")
            self.assertGreater(picture.width, 80)
        challenge = CaptchaStore.objects.get(hashkey=key).challenge
        self.assertEqual(len(challenge), settings.CAPTCHA_LENGTH)
        self.assertTrue(set(challenge) <= set("ACDEFHJKMNPRTUVWXY349"), challenge)
        # The refresh button's request: a new key and picture, only for scripts (the library's rule).
        self.assertEqual(self.client.get(reverse("captcha-refresh")).status_code, 404)
        fresh = self.client.get(reverse("captcha-refresh"), headers={"X-Requested-With": "XMLHttpRequest"}).json()
        self.assertNotEqual(fresh["key"], key)
        self.assertEqual(self.client.get(fresh["image_url"])["Content-Type"], "image/png")
        self.assertRedirects(self.client.post(reverse("register"), {
            "username": "jun", "password1": self.password, "password2": self.password,
            "captcha_0": fresh["key"], "captcha_1": "PASSED"}), reverse("catalog:home"))

    @skipUnless(shutil.which("flite"), "the audio captcha needs flite (scripts/setup.sh installs it)")
    def test_audio_version(self):
        page = self.client.get(reverse("register"))
        self.assertContains(page, "data-captcha-audio")
        audio = self.client.get(reverse("captcha-audio", args=[captcha_key(page)]))
        self.assertEqual(audio.status_code, 200)
        self.assertEqual(audio["Content-Type"], "audio/wav")
        body = b"".join(audio.streaming_content)
        self.assertEqual(body[:4], b"RIFF")
        self.assertGreater(len(body), 10_000)  # a second or more of speech


class CaptchaCheckTests(TestCase):
    """Outside test mode: only the picture's own characters pass, once; "PASSED" is just a wrong answer."""

    password = "a-long-enough-secret-9"

    def post(self, key: str, answer: str, name: str):
        return self.client.post(reverse("register"), {"username": name, "password1": self.password,
                                                      "password2": self.password, "captcha_0": key,
                                                      "captcha_1": answer})

    def test_the_real_answer_passes_once(self):
        key = captcha_key(self.client.get(reverse("register")))
        self.assertEqual(self.post(key, "PASSED", "kai").status_code, 400)
        key = captcha_key(self.client.get(reverse("register")))
        answer = CaptchaStore.objects.get(hashkey=key).challenge  # as drawn: capitals
        self.assertRedirects(self.post(key, answer, "kai"), reverse("catalog:home"))
        self.client.post(reverse("logout"))
        self.assertContains(self.post(key, answer, "lan"), "Those are not the characters", status_code=400)
        self.assertEqual(list(User.objects.values_list("username", flat=True)), ["kai"])
