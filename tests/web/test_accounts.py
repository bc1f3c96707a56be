"""Accounts: register, log in and out, change and reset the password, API tokens."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.core import mail
from django.test import TestCase
from django.urls import reverse
from rest_framework.authtoken.models import Token


class AccountTests(TestCase):
    password = "a-long-enough-secret-9"

    def make_user(self, name: str = "carol") -> User:
        return User.objects.create_user(name, f"{name}@example.com", self.password)

    def test_register_logs_the_new_user_in(self):
        page = self.client.get(reverse("register"))
        self.assertContains(page, 'name="password1"')
        response = self.client.post(reverse("register"), {
            "username": "dave", "email": "dave@example.com", "password1": self.password, "password2": self.password,
        }, follow=True)
        self.assertRedirects(response, reverse("catalog:home"))
        self.assertEqual(response.context["user"].username, "dave")
        self.assertContains(response, "Welcome, dave")
        self.assertContains(response, 'name="image"')  # may search now

    def test_register_rejects_taken_names_and_weak_or_mismatched_passwords(self):
        self.make_user("erin")
        taken = self.client.post(reverse("register"), {"username": "erin", "password1": self.password,
                                                       "password2": self.password})
        self.assertEqual(taken.status_code, 400)
        self.assertContains(taken, "already exists", status_code=400)
        mismatch = self.client.post(reverse("register"), {"username": "frank", "password1": self.password,
                                                          "password2": self.password + "x"})
        self.assertContains(mismatch, "didn’t match", status_code=400)
        weak = self.client.post(reverse("register"), {"username": "gina", "password1": "12345678",
                                                      "password2": "12345678"})
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
        response = self.client.post(reverse("password_reset"), {"email": "carol@example.com"})
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
