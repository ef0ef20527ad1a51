"""The customer's account pages: sign-up, the confirmation landing, sign-in, forgotten password and username,
terms, profile, the language picker, sign-out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError

from contracts import accounts
from contracts.errors import LANGUAGES, AccountsErrorCode
from gateway.cookies import clear_session_cookies, end_replaced_session, set_session_cookies
from gateway.web import i18n
from gateway.web.view import (
    ACCOUNT_COOKIE,
    Errors,
    Page,
    Refusal,
    View,
    local_path,
    refusal_errors,
    ticked,
    validation_errors,
)

router = APIRouter(include_in_schema=False)
SIGNED_UP_COOKIE = "portal_signed_up"  # the address just signed up, for the page that says where the link went



def optional(form: dict[str, str], name: str) -> str | None:
    return form.get(name) or None


# --- sign-in and sign-out ----------------------------------------------------------------------------------------

@router.get("/sign-in")
async def sign_in_page(view: Page, next: str | None = None) -> Response:
    return view.render("sign_in.html", next=local_path(next))


@router.post("/sign-in")
async def sign_in(view: Page) -> Response:
    form = await view.form()
    target = local_path(form.get("next"))
    try:
        request = accounts.Login(login=form.get("login", ""), password=form.get("password", ""),
                                 remember_me=ticked(form, "remember_me"))
    except ValidationError as error:
        return view.render("sign_in.html", 400, errors=validation_errors(view, error), values=form, next=target)
    try:
        session = await view.call(accounts.Login.routing_key, request, anonymous=True)
    except Refusal as error:
        return view.render("sign_in.html", 400, errors=refusal_errors(view, error), values=form, next=target)
    return await signed_in(view, session, target, stay_signed_in=request.remember_me)


@router.get("/sign-in/contract")
async def contract_sign_in_page(view: Page) -> Response:
    return view.render("sign_in_contract.html")


@router.post("/sign-in/contract")
async def contract_sign_in(view: Page) -> Response:
    """OKI's page-price portal: customer and contract number, and the portal shows only that contract."""
    form = await view.form()
    try:
        request = accounts.ContractLogin(customer_number=form.get("customer_number", ""),
                                         contract_number=form.get("contract_number", ""))
        session = await view.call(accounts.ContractLogin.routing_key, request, anonymous=True)
    except ValidationError as error:
        return view.render("sign_in_contract.html", 400, errors=validation_errors(view, error), values=form)
    except Refusal as error:
        return view.render("sign_in_contract.html", 400, values=form, errors=refusal_errors(
            view, error, {"invalid_credentials": "contract_number"}))
    return await signed_in(view, session, "/", contract=True)


async def signed_in(view: View, session: dict[str, Any], target: str, contract: bool = False,
                    stay_signed_in: bool = False) -> Response:
    """The session's cookies set, an older session of this browser ended, the profile's language taken on."""
    await end_replaced_session(view.portal, view.request, str(session["access_token"]), view.settings)
    view.session = str(session["access_token"])
    view.contract = contract
    view.cookies[ACCOUNT_COOKIE] = "contract" if contract else "person"
    language = session["user"].get("language")
    if language in LANGUAGES:  # the language of the profile, from now on in this browser too
        view.language = language
        view.cookies[i18n.LANGUAGE_COOKIE] = language
    if session["user"].get("role") == "operator" and target == "/":  # no page asked for: the back office
        target = "/office"
    response = view.redirect(target)
    set_session_cookies(response, session, view.settings, stay_signed_in=stay_signed_in)
    return response


@router.post("/sign-out")
async def sign_out(view: Page) -> Response:
    await view.form()
    if view.session:
        try:
            await view.call(accounts.Logout.routing_key)
        except Exception:  # signed out already, or accounts away: the cookies go all the same
            pass
    response = view.redirect("/sign-in?signed_out=1")
    clear_session_cookies(response, view.settings)
    response.delete_cookie(ACCOUNT_COOKIE, path="/")
    return response


# --- sign-up and the confirmation mail's landing ----------------------------------------------------------------

@router.get("/sign-up")
async def sign_up_page(view: Page) -> Response:
    return view.render("sign_up.html", values={"language": view.language})


@router.post("/sign-up")
async def sign_up(view: Page) -> Response:
    form = await view.form()
    fields: dict[str, Any] = {
        "email": form.get("email", ""), "username": form.get("username", ""), "password": form.get("password", ""),
        "password_confirm": form.get("password_confirm", ""), "country": form.get("country", ""),
        "language": form.get("language") if form.get("language") in LANGUAGES else view.language,
        "accept_terms": ticked(form, "accept_terms"), "accept_privacy": ticked(form, "accept_privacy"),
        "customer_number": optional(form, "customer_number"), "serial_number": optional(form, "serial_number")}
    try:
        request = accounts.Register(**fields)
        if not (request.accept_terms and request.accept_privacy):
            missing = {name: view.gettext("Please tick this box.")
                       for name in ("accept_terms", "accept_privacy") if not fields[name]}
            return view.render("sign_up.html", 400, values=form,
                               errors=Errors(view.gettext("Please accept the terms and the privacy notice."), missing))
        await view.call(accounts.Register.routing_key, request, anonymous=True)
    except ValidationError as error:
        return view.render("sign_up.html", 400, errors=validation_errors(view, error), values=form)
    except Refusal as error:
        return view.render("sign_up.html", 400, errors=refusal_errors(view, error), values=form)
    # Post/redirect/get: a reload shows the answer again instead of signing up a second time (email_taken).
    response = view.redirect("/sign-up/done")
    response.set_cookie(SIGNED_UP_COOKIE, request.email, max_age=900, path="/sign-up/done", httponly=True,
                        samesite="lax", secure=view.settings.secure_cookies)
    return response


@router.get("/sign-up/done")
async def signed_up(view: Page) -> Response:
    return view.render("signed_up.html", email=view.request.cookies.get(SIGNED_UP_COOKIE))


@router.get("/confirm-email")
async def confirm_page(view: Page, token: str = "") -> Response:
    # A button, not a confirmation on opening: mail scanners open links too, and must not confirm for anyone.
    return view.render("confirm_email.html", token=token)


@router.post("/confirm-email")
async def confirm(view: Page) -> Response:
    form = await view.form()
    try:
        confirmed = await view.call(accounts.ConfirmEmail.routing_key, {"token": form.get("token", "")},
                                    anonymous=True)
    except Refusal as error:
        return view.render("confirm_email.html", 400, errors=refusal_errors(view, error), token=form.get("token"))
    return view.redirect(f"/confirm-email/done?status={quote(str(confirmed['status']))}")


@router.get("/confirm-email/done")
async def confirmed_page(view: Page, status: str = "active") -> Response:
    return view.render("confirmed.html", status=status)


# --- forgotten password and username ----------------------------------------------------------------------------

@router.get("/password")
async def forgotten_password_page(view: Page) -> Response:
    return view.render("forgotten_password.html")


@router.post("/password")
async def forgotten_password(view: Page) -> Response:
    form = await view.form()
    try:
        request = accounts.RequestPasswordReset(email=form.get("email", ""))
        await view.call(accounts.RequestPasswordReset.routing_key, request, anonymous=True)
    except ValidationError as error:
        return view.render("forgotten_password.html", 400, errors=validation_errors(view, error), values=form)
    except Refusal as error:
        return view.render("forgotten_password.html", 400, errors=refusal_errors(view, error), values=form)
    # The same answer for an address without an account: the page tells no one who has one.
    return view.render("mail_sent.html", what="password")


@router.get("/reset-password")
async def reset_page(view: Page, token: str = "") -> Response:
    return view.render("reset_password.html", token=token, spent=False)


@router.post("/reset-password")
async def reset(view: Page) -> Response:
    form = await view.form()
    token = form.get("token", "")
    try:
        request = accounts.ResetPassword(token=token, password=form.get("password", ""),
                                         password_confirm=form.get("password_confirm", ""))
        await view.call(accounts.ResetPassword.routing_key, request, anonymous=True)
    except ValidationError as error:
        return view.render("reset_password.html", 400, errors=validation_errors(view, error), token=token,
                           spent=False)
    except Refusal as error:
        return view.render("reset_password.html", 400, errors=refusal_errors(view, error), token=token,
                           spent=getattr(error, "code", None) == AccountsErrorCode.TOKEN_INVALID)
    return view.redirect("/sign-in?password_reset=1")


@router.get("/username")
async def forgotten_username_page(view: Page) -> Response:
    return view.render("forgotten_username.html")


@router.post("/username")
async def forgotten_username(view: Page) -> Response:
    form = await view.form()
    try:
        request = accounts.RecoverUsername(first_name=form.get("first_name", ""), last_name=form.get("last_name", ""),
                                           email=form.get("email", ""))
        await view.call(accounts.RecoverUsername.routing_key, request, anonymous=True)
    except ValidationError as error:
        return view.render("forgotten_username.html", 400, errors=validation_errors(view, error), values=form)
    except Refusal as error:
        return view.render("forgotten_username.html", 400, errors=refusal_errors(view, error), values=form)
    return view.render("mail_sent.html", what="username")


# --- terms, profile, language ------------------------------------------------------------------------------------

@router.get("/terms")
async def terms_page(view: Page, next: str | None = None) -> Response:
    profile = await view.call(accounts.GetProfile.routing_key)
    return view.render("terms.html", profile=profile, next=local_path(next))


@router.post("/terms")
async def accept_terms(view: Page) -> Response:
    form = await view.form()
    profile = await view.call(accounts.GetProfile.routing_key)
    target = local_path(form.get("next"))
    if not (ticked(form, "accept_terms") and ticked(form, "accept_privacy")):
        missing = {name: view.gettext("Please tick this box.")
                   for name in ("accept_terms", "accept_privacy") if not ticked(form, name)}
        return view.render("terms.html", 400, profile=profile, next=target,
                           errors=Errors(view.gettext("Please accept the terms and the privacy notice."), missing))
    try:
        # The versions the page showed: a version that changed since is refused, not accepted unseen.
        await view.call(accounts.AcceptTerms.routing_key, {"terms_version": form.get("terms_version", ""),
                                                           "privacy_version": form.get("privacy_version", "")})
    except Refusal as error:
        return view.render("terms.html", 400, profile=profile, next=target, errors=refusal_errors(view, error))
    return view.redirect(target)


@router.get("/profile")
async def profile_page(view: Page) -> Response:
    profile = await view.call(accounts.GetProfile.routing_key)
    return view.render("profile.html", profile=profile, values=profile_values(profile), saved=False)


def profile_values(profile: dict[str, Any]) -> dict[str, Any]:
    communication = profile.get("communication") or {}
    return {"title": profile.get("title") or "", "first_name": profile.get("first_name") or "",
            "last_name": profile.get("last_name") or "", "phone": profile.get("phone") or "",
            "language": profile.get("language"), **{f"by_{way}": "on" if communication.get(way) else ""
                                                     for way in ("email", "sms", "phone", "post")}}


@router.post("/profile")
async def update_profile(view: Page) -> Response:
    form = await view.form()
    profile = await view.call(accounts.GetProfile.routing_key)
    try:
        request = accounts.UpdateProfile(
            title=form.get("title", ""), first_name=form.get("first_name", ""), last_name=form.get("last_name", ""),
            phone=form.get("phone", ""), language=form.get("language") or None,
            communication=accounts.Communication(**{way: ticked(form, f"by_{way}")
                                                    for way in ("email", "sms", "phone", "post")}))
        updated = await view.call(accounts.UpdateProfile.routing_key, request)
    except ValidationError as error:
        return view.render("profile.html", 400, profile=profile, errors=validation_errors(view, error), values=form,
                           saved=False)
    except Refusal as error:
        return view.render("profile.html", 400, profile=profile, errors=refusal_errors(view, error), values=form,
                           saved=False)
    if updated.get("language") in LANGUAGES:
        view.language = updated["language"]
        view.cookies[i18n.LANGUAGE_COOKIE] = updated["language"]
    return view.render("profile.html", profile=updated, values=profile_values(updated), saved=True)


@router.post("/language")
async def choose_language(view: Page) -> Response:
    """The picker in every page's header; a signed-in user's choice is kept in the profile too."""
    form = await view.form()
    chosen = form.get("language", "")
    target = local_path(form.get("next"))
    if chosen not in LANGUAGES:
        return view.redirect(target)
    view.cookies[i18n.LANGUAGE_COOKIE] = chosen
    if view.session:
        try:
            await view.call(accounts.UpdateProfile.routing_key, {"language": chosen})
        except Refusal:
            pass  # the page is in the chosen language all the same; the profile keeps the older one
    return view.redirect(target)
