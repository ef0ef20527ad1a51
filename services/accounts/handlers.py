"""accounts' command and event handlers: parse, authorise, apply the rules, save, reply."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from pymongo.errors import DuplicateKeyError

from contracts import accounts as api
from contracts.base import Event, Page
from contracts.registration import DeviceProvisioned
from services.accounts import domain
from services.accounts.store import UNCONFIRMED_UNTIL, AccountStore, page_bounds, serial_key
from services.runtime.commands import Access, CommandContext, CommandError, Replay
from services.runtime.events import EventContext
from services.runtime.mongo import Document, as_datetime
from services.runtime.outbox import APPLIED
from services.runtime.service import Router, ServiceInstance
from services.runtime.settings import Settings
from services.runtime.tokens import Role, issue_token

log = logging.getLogger(__name__)
router = Router()
MAIL_REQUESTS_PER_HOUR = 5  # links mailed per address and kind; more are answered `ok` but not sent
# Each retry follows a provisioning that won, so n concurrent ones of one customer need at most n attempts.
MAX_PROVISION_ATTEMPTS = 100


def now_utc() -> datetime:
    return datetime.now(UTC)


def store_of(ctx: CommandContext | EventContext) -> AccountStore:
    return AccountStore(ctx.db)


def link(ctx: CommandContext, path: str, token: str) -> str:
    return f"{ctx.instance.settings.public_url.rstrip('/')}/{path}?token={token}"


def expired(expires_at: datetime | str | None, now: datetime) -> bool:
    moment = as_datetime(expires_at)
    return moment is None or moment < now


def recipient(user: Document) -> dict[str, Any]:
    profile = user.get("profile") or {}
    return {"user_id": user["_id"], "email": user["email"], "language": user.get("language", "en"),
            "first_name": profile.get("first_name"), "last_name": profile.get("last_name")}


async def check_password(stored_hash: str, password: str) -> bool:
    # Argon2 takes tens of milliseconds of CPU: off the event loop, so others are served meanwhile.
    return await asyncio.to_thread(domain.password_matches, stored_hash, password)


async def new_hash(password: str) -> str:
    return await asyncio.to_thread(domain.hash_password, password)


# --- sign-up and confirmation -------------------------------------------------------------------

@router.command("accounts.register", api.Register, access=Access.ANYONE)
async def register(request: api.Register, ctx: CommandContext) -> api.Registered:
    if not (request.accept_terms and request.accept_privacy):
        raise CommandError("terms_not_accepted", fields={
            name: "must be accepted" for name in ("accept_terms", "accept_privacy") if not getattr(request, name)})
    problem = domain.password_problem(request.password, request.password_confirm,
                                      username=request.username, email=request.email)
    if problem:
        raise CommandError(problem, fields={"password": problem})
    store, now = store_of(ctx), now_utc()
    email_key, username_key = domain.normalise_login(request.email), domain.normalise_login(request.username)
    # Derived from the command id: a command run again after a crash finds its own user, before the address it
    # took itself could refuse it as `email_taken`.
    user_id = uuid.uuid5(uuid.NAMESPACE_URL, f"accounts.register:{ctx.message_id}").hex if ctx.message_id \
        else uuid.uuid4().hex
    if ctx.message_id and (earlier := await store.user(user_id)) is not None:
        return api.Registered(user_id=user_id, status=earlier["status"])
    await store.drop_expired_sign_ups(now, email_key=email_key, username_key=username_key)
    if taken := await store.taken(email_key=email_key, username_key=username_key):
        raise CommandError(taken, fields={"email" if taken == "email_taken" else "username": taken})

    confirmation = domain.new_token(now, domain.CONFIRMATION_VALID)
    user: Document = {
        "_id": user_id, "email": request.email, "email_key": email_key, "username": request.username,
        "username_key": username_key, "password_hash": await new_hash(request.password),
        "role": request.role, "language": request.language, "country": request.country,
        "status": "pending_confirmation", "requested_customer_number": request.customer_number,
        "serial_number": serial_key(request.serial_number) if request.serial_number else None,
        "customer_number": None, "profile": {}, "profile_version": 1,
        # Consent to create the account (the privacy notice was read); accepting the terms for
        # device registration is `accounts.accept_terms`, later, from the profile page (OKI flow).
        "signed_up_with_consent_at": now, "terms_version": None, "privacy_version": None,
        "terms_accepted_at": None, "confirmation_digest": confirmation.digest,
        "confirmation_expires_at": confirmation.expires_at, "pending_email": None, "created_at": now,
        UNCONFIRMED_UNTIL: confirmation.expires_at,  # the TTL index removes the account with its link
    }
    events = [
        api.UserRegistered(**recipient(user), username=request.username,
                           confirmation_url=link(ctx, "confirm-email", confirmation.token),
                           expires_at=confirmation.expires_at),
    ]
    try:
        await store.insert_user(user, events, ctx.message_id)
    except DuplicateKeyError:
        existing = await store.user(user_id)
        if existing is not None:  # this very command, run again
            return api.Registered(user_id=user_id, status=existing["status"])
        taken = await store.taken(email_key=email_key, username_key=username_key) or "email_taken"
        raise CommandError(taken, fields={"email" if taken == "email_taken" else "username": taken}) from None
    return api.Registered(user_id=user_id, status="pending_confirmation")


@router.command("accounts.confirm_email", api.ConfirmEmail, access=Access.ANYONE)
async def confirm_email(request: api.ConfirmEmail, ctx: CommandContext) -> api.Confirmed:
    store, now = store_of(ctx), now_utc()
    digest = domain.token_digest(request.token)
    user = await store.users.find_one({"confirmation_digest": digest})
    if user is None or expired(user["confirmation_expires_at"], now):
        raise CommandError("token_invalid")
    clear = {"confirmation_digest": None, "confirmation_expires_at": None}
    events: list[Event] = []
    if user.get("pending_email"):  # a changed address, now confirmed
        new_key = domain.normalise_login(user["pending_email"])
        if await store.users.find_one({"email_key": new_key, "_id": {"$nin": [user["_id"]]}}, {"_id": 1}):
            raise CommandError("conflict", fields={"email": "taken meanwhile"})
        update = {"$set": {**clear, "email": user["pending_email"], "email_key": new_key, "pending_email": None},
                  "$inc": {"profile_version": 1}}
        changed = {**user, "email": user["pending_email"]}
        events.append(profile_updated(changed, user["profile_version"] + 1))
        status = user["status"]
    else:
        update, status, events = await sign_up_confirmed(store, user, now)
        update["$set"].update(clear)
    try:
        changed_user = await store.change_user({"_id": user["_id"], "confirmation_digest": digest}, update, events,
                                               ctx.message_id)
    except DuplicateKeyError:
        raise CommandError("conflict", fields={"email": "taken meanwhile"}) from None
    if changed_user is None:  # used by a concurrent confirmation a moment ago
        raise CommandError("token_invalid")
    return api.Confirmed(user_id=user["_id"], status=status)


async def sign_up_confirmed(store: AccountStore, user: Document, now: datetime) -> tuple[Document, str, list[Event]]:
    """The update confirming a sign-up's address, the status it gives and the events it emits."""
    owner = await store.serial_owner(user["serial_number"]) if user.get("serial_number") else None
    requested = user.get("requested_customer_number")
    status = domain.status_after_confirmation(
        role=user["role"], requested_customer=requested, serial_matches=owner is not None and owner == requested)
    customer = requested if status == "active" and requested and owner == requested else None
    events: list[Event] = []
    if status == "active":
        events.append(api.UserActivated(**recipient(user), username=user["username"], role=user["role"],
                                        customer_number=customer))
    update = {"$set": {"status": status, "customer_number": customer, "confirmed_at": now},
              "$unset": {UNCONFIRMED_UNTIL: ""}}  # confirmed: the account no longer expires
    return update, status, events


@router.command("accounts.resend_confirmation", api.ResendConfirmation, access=Access.ANYONE)
async def resend_confirmation(request: api.ResendConfirmation, ctx: CommandContext) -> None:
    store, now = store_of(ctx), now_utc()
    user = await user_to_mail(store, "confirmation", request.email, now)
    if user is None or user["status"] != "pending_confirmation":
        return  # the same `ok`: nothing tells whether the address exists
    # A new link, not a longer life: whoever signed up with someone else's address cannot keep it by resending.
    deadline = as_datetime(user.get(UNCONFIRMED_UNTIL) or user["confirmation_expires_at"])
    if deadline is None or deadline <= now:
        return  # expired with its link: the address is free for a new sign-up
    confirmation = domain.new_token(now, deadline - now)
    await store.change_user({"_id": user["_id"]}, {"$set": {
        "confirmation_digest": confirmation.digest, "confirmation_expires_at": confirmation.expires_at}}, [
        api.EmailConfirmationRequested(**recipient(user), username=user["username"],
                                       confirmation_url=link(ctx, "confirm-email", confirmation.token),
                                       expires_at=confirmation.expires_at)])


async def user_to_mail(store: AccountStore, kind: str, email: str, now: datetime) -> Document | None:
    """The user to mail a link of this kind to; None for an unknown address or one mailed enough this hour.

    The cap stops anyone flooding a mailbox through us; callers answer `{}` either way.
    """
    email_key = domain.normalise_login(email)
    if await store.count_mail_request(kind, email_key, now, now + timedelta(hours=1)) > MAIL_REQUESTS_PER_HOUR:
        return None
    return await store.user_by_email(email_key)


# --- sign-in and sessions ------------------------------------------------------------------------

@router.command("accounts.login", api.Login, access=Access.ANYONE, replay=Replay.RERUN)
async def login(request: api.Login, ctx: CommandContext) -> api.Session:
    store, now = store_of(ctx), now_utc()
    login_key = domain.normalise_login(request.login)
    user = await store.user_by_login(login_key)
    key = attempts_key(user, login_key)
    attempt = await counted_attempt(store, key, now)
    # Unknown users cost the same Argon2 verification as known ones: timing tells nothing.
    matches = await check_password(user["password_hash"] if user else ctx.instance.state["dummy_hash"],
                                   request.password)
    if user is None or not matches:
        await failed_attempt(store, key, attempt, now)
    await store.clear_failures(key)
    refuse_unless_active(user)
    return await open_session(ctx, store, now, user_id=user["_id"], role=Role(user["role"]),
                              customer_number=user.get("customer_number"), contract_number=None,
                              lifetime=domain.session_lifetime(request.remember_me), user=user)


def refuse_unless_active(user: Document) -> None:
    status = user["status"]
    if status == "pending_confirmation":
        raise CommandError("email_not_confirmed")
    if status == "pending_verification":
        raise CommandError("pending_verification")
    if status != "active":
        raise CommandError("forbidden")


def attempts_key(user: Document | None, login_key: str) -> str:
    """One counter per account, whichever of its names is tried; unknown names get their own."""
    return f"user:{user['_id']}" if user else f"login:{login_key}"


async def counted_attempt(store: AccountStore, key: str, now: datetime) -> domain.Attempt:
    """Count this attempt before the secret is checked; `account_locked` when it is one too many."""
    attempt = await store.count_attempt(key, now)
    if attempt.refused(now):
        raise CommandError("account_locked")
    return attempt


async def failed_attempt(store: AccountStore, key: str, attempt: domain.Attempt, now: datetime,
                         fields: dict[str, str] | None = None) -> NoReturn:
    if attempt.locks_on_failure():
        await store.lock(key, now + domain.LOCKOUT)
    raise CommandError("invalid_credentials", fields=fields)


@router.command("accounts.contract_login", api.ContractLogin, access=Access.ANYONE, replay=Replay.RERUN)
async def contract_login(request: api.ContractLogin, ctx: CommandContext) -> api.Session:
    store, now = store_of(ctx), now_utc()
    # The contract number is the only secret: guesses are counted per customer.
    key = f"contract:{request.customer_number.strip().upper()}"
    attempt = await counted_attempt(store, key, now)
    customer = await store.customer(request.customer_number.strip())
    stored = (customer or {}).get("contracts", {}).get(request.contract_number.strip())
    contract = api.Contract(**stored) if stored else None
    if customer is None or contract is None or not domain.contract_in_force(contract.start_date, contract.end_date,
                                                                            now.date()):
        await failed_attempt(store, key, attempt, now)
    await store.clear_failures(key)
    return await open_session(ctx, store, now, user_id=f"contract:{customer['_id']}:{contract.contract_number}",
                              role=Role.CUSTOMER, customer_number=customer["_id"],
                              contract_number=contract.contract_number, lifetime=domain.SESSION_DEFAULT,
                              user=None)


async def open_session(ctx: CommandContext, store: AccountStore, now: datetime, *, user_id: str, role: Role,
                       customer_number: str | None, contract_number: str | None, lifetime: timedelta,
                       user: Document | None) -> api.Session:
    token, claims = issue_token(ctx.instance.settings.token_secret.get_secret_value(), user_id=user_id, role=role,
                                now=now, lifetime=lifetime, customer_number=customer_number,
                                contract_number=contract_number)
    await store.add_session({"_id": claims.session_id, "user_id": user_id, "created_at": now,
                             "expires_at": claims.expires_at, "revoked_at": None})
    # A password changed between our check and now ends every other session by listing them
    # after its write: either it listed this one, or we see the new hash here.
    if user is not None and not await store.has_password_hash(user_id, user["password_hash"]):
        await store.drop_session(claims.session_id)
        raise CommandError("invalid_credentials")
    return api.Session(access_token=token, expires_at=claims.expires_at, user=api.UserSummary(
        id=user_id, email=user["email"] if user else None, username=user["username"] if user else None,
        role=role.value, language=user.get("language", ctx.language) if user else ctx.language,
        customer_number=customer_number, contract_number=contract_number))


@router.command("accounts.logout", api.Logout, access=Access.AUTH)
async def logout(request: api.Logout, ctx: CommandContext) -> None:
    claims, now = ctx.caller, now_utc()
    revoked = api.SessionRevoked(session_id=claims.session_id, user_id=claims.user_id, revoked_at=now,
                                 until=claims.expires_at)
    # Refused here at once; the event tells every other service.
    await ctx.instance.revocations.add(revoked)
    await store_of(ctx).revoke_session(claims.session_id, now, [revoked])


# --- passwords and usernames ----------------------------------------------------------------------

@router.command("accounts.request_password_reset", api.RequestPasswordReset, access=Access.ANYONE)
async def request_password_reset(request: api.RequestPasswordReset, ctx: CommandContext) -> None:
    store, now = store_of(ctx), now_utc()
    user = await user_to_mail(store, "reset", request.email, now)
    if user is None:
        return  # the same `ok`: nothing tells whether the address exists
    reset = domain.new_token(now, domain.RESET_VALID)
    await store.change_user({"_id": user["_id"]}, {"$set": {
        "reset_digest": reset.digest, "reset_expires_at": reset.expires_at}}, [
        api.PasswordResetRequested(**recipient(user), reset_url=link(ctx, "reset-password", reset.token),
                                   expires_at=reset.expires_at)])


@router.command("accounts.reset_password", api.ResetPassword, access=Access.ANYONE)
async def reset_password(request: api.ResetPassword, ctx: CommandContext) -> None:
    store, now = store_of(ctx), now_utc()
    digest = domain.token_digest(request.token)
    user = await store.users.find_one({"reset_digest": digest})
    if user is None or expired(user["reset_expires_at"], now):
        raise CommandError("token_invalid")
    problem = domain.password_problem(request.password, request.password_confirm,
                                      username=user["username"], email=user["email"])
    if problem:
        raise CommandError(problem, fields={"password": problem})
    # The link went to the account's address, so using it proves that address: an unconfirmed sign-up is
    # confirmed (its owner takes over an account someone else made with it), and a pending e-mail change,
    # possibly an intruder's, is cancelled.
    update: Document = {"$set": {}}
    events: list[Event] = [api.PasswordChanged(**recipient(user))]
    if user["status"] == "pending_confirmation":
        update, _, events = await sign_up_confirmed(store, user, now)
        events.insert(0, api.PasswordChanged(**recipient(user)))
    update["$set"].update(password_hash=await new_hash(request.password), reset_digest=None, reset_expires_at=None,
                          pending_email=None, confirmation_digest=None, confirmation_expires_at=None)
    revoked = api.SessionRevoked(user_id=user["_id"], revoked_at=now_utc(), until=now + domain.SESSION_REMEMBERED)
    changed = await store.change_user({"_id": user["_id"], "reset_digest": digest}, update, [*events, revoked],
                                      ctx.message_id)
    if changed is None:
        raise CommandError("token_invalid")  # used a moment ago
    await ctx.instance.revocations.add(revoked)
    await end_other_sessions(ctx, store, user["_id"], keep=None)
    await store.clear_failures(attempts_key(user, user["email_key"]))


@router.command("accounts.change_password", api.ChangePassword, access=Access.AUTH)
async def change_password(request: api.ChangePassword, ctx: CommandContext) -> None:
    store, now = store_of(ctx), now_utc()
    user = await own_user(ctx, store)
    if not already_applied(user, ctx.message_id):  # else a crash came before the sessions were ended
        await check_current_password(store, user, request.current_password, now, field="current_password")
        problem = domain.password_problem(request.password, request.password_confirm,
                                          username=user["username"], email=user["email"])
        if problem:
            raise CommandError(problem, fields={"password": problem})
        changed = await store.change_user({"_id": user["_id"], "password_hash": user["password_hash"]},
                                          {"$set": {"password_hash": await new_hash(request.password)}},
                                          [api.PasswordChanged(**recipient(user))], ctx.message_id)
        if changed is None:  # changed by a concurrent command: the password given is no longer the current one
            raise CommandError("invalid_credentials", fields={"current_password": "invalid_credentials"})
    # OWASP ASVS 3.3: a new password ends every other session (listed after the write, see open_session).
    await end_other_sessions(ctx, store, user["_id"], keep=ctx.caller.session_id)


def already_applied(user: Document, command_id: str | None) -> bool:
    return command_id is not None and command_id in (user.get(APPLIED) or [])


async def check_current_password(store: AccountStore, user: Document, password: str, now: datetime, *,
                                 field: str) -> None:
    """`invalid_credentials` unless `password` is the user's; counted like a sign-in, so a stolen session
    cannot try passwords without limit."""
    key = attempts_key(user, user["email_key"])
    attempt = await counted_attempt(store, key, now)
    if not await check_password(user["password_hash"], password):
        await failed_attempt(store, key, attempt, now, fields={field: "invalid_credentials"})
    await store.clear_failures(key)


async def end_other_sessions(ctx: CommandContext, store: AccountStore, user_id: str, *, keep: str | None) -> None:
    """Revoke every session of the user but `keep`: here at once, elsewhere through the events."""
    now = now_utc()
    for session in await store.live_sessions(user_id, keep=keep):
        revoked = api.SessionRevoked(session_id=session["_id"], user_id=user_id, revoked_at=now,
                                     until=as_datetime(session["expires_at"]) or now + domain.SESSION_REMEMBERED)
        await ctx.instance.revocations.add(revoked)
        await store.revoke_session(session["_id"], now, [revoked])


@router.command("accounts.recover_username", api.RecoverUsername, access=Access.ANYONE)
async def recover_username(request: api.RecoverUsername, ctx: CommandContext) -> None:
    store, now = store_of(ctx), now_utc()
    user = await user_to_mail(store, "username", request.email, now)
    profile = (user or {}).get("profile") or {}
    if user is None or not (same_name(profile.get("first_name"), request.first_name)
                            and same_name(profile.get("last_name"), request.last_name)):
        return  # the same `ok`: nothing tells whether the address exists
    await store.change_user({"_id": user["_id"]}, {"$set": {"username_reminded_at": now}},
                            [api.UsernameReminderRequested(**recipient(user), username=user["username"])])


def same_name(stored: str | None, given: str) -> bool:
    return stored is not None and stored.strip().casefold() == given.strip().casefold()


# --- profile, terms, contacts, contracts ------------------------------------------------------------

async def own_user(ctx: CommandContext, store: AccountStore) -> Document:
    user = await store.user(ctx.caller.user_id)
    if user is None:  # a contract sign-in has no user profile
        raise CommandError("not_found")
    return user


def profile_of(user: Document, settings: Settings) -> api.Profile:
    profile = user.get("profile") or {}
    accepted = (user.get("terms_version"), user.get("privacy_version"))
    return api.Profile(
        user_id=user["_id"], email=user["email"], pending_email=user.get("pending_email"),
        username=user["username"], role=user["role"], status=user["status"],
        customer_number=user.get("customer_number"), language=user.get("language", "en"),
        country=user.get("country"), terms_version=accepted[0], privacy_version=accepted[1],
        terms_accepted_at=as_datetime(user.get("terms_accepted_at")),
        current_terms_version=settings.terms_version, current_privacy_version=settings.privacy_version,
        terms_open=accepted != (settings.terms_version, settings.privacy_version), **profile)


def profile_updated(user: Document, version: int) -> api.ProfileUpdated:
    profile = user.get("profile") or {}
    return api.ProfileUpdated(**recipient(user), username=user["username"], customer_number=user.get("customer_number"),
                              communication=api.Communication(**profile.get("communication", {})),
                              subscriptions=profile.get("subscriptions", []), version=version)


@router.command("accounts.get_profile", api.GetProfile, access=Access.AUTH, replay=Replay.RERUN)
async def get_profile(request: api.GetProfile, ctx: CommandContext) -> api.Profile:
    return profile_of(await own_user(ctx, store_of(ctx)), ctx.instance.settings)


PROFILE_SECTIONS = frozenset({"address", "company", "communication", "subscriptions"})


@router.command("accounts.update_profile", api.UpdateProfile, access=Access.AUTH)
async def update_profile(request: api.UpdateProfile, ctx: CommandContext) -> api.Profile:
    store, now = store_of(ctx), now_utc()
    user = await own_user(ctx, store)
    changes = request.model_dump(exclude_unset=True, exclude={"email", "current_password", "language", "country"},
                                 mode="json")
    # A section given as null is left as it is: the profile always has them (a null `phone` clears the phone).
    changes = {name: value for name, value in changes.items() if value is not None or name not in PROFILE_SECTIONS}
    fields: Document = {f"profile.{name}": value for name, value in changes.items()}
    for name in ("language", "country"):
        if getattr(request, name) is not None:
            fields[name] = getattr(request, name)
    events: list[Event] = []
    new_email = request.email if request.email and domain.normalise_login(request.email) != user["email_key"] \
        else None
    if new_email:  # takes effect once confirmed from the new address
        await check_email_change_allowed(store, user, request.current_password, now)
        confirmation = domain.new_token(now, domain.CONFIRMATION_VALID)
        fields.update(pending_email=new_email, confirmation_digest=confirmation.digest,
                      confirmation_expires_at=confirmation.expires_at)
        events.append(api.EmailConfirmationRequested(
            **{**recipient(user), "email": new_email}, username=user["username"], email_change=True,
            confirmation_url=link(ctx, "confirm-email", confirmation.token), expires_at=confirmation.expires_at))
        # The old address is told, so its owner notices a change made with a stolen session.
        events.append(api.EmailChangeRequested(**recipient(user), username=user["username"], new_email=new_email))
    preview = apply_profile(user, fields)
    events.append(profile_updated(preview, user.get("profile_version", 1) + 1))
    updated = await store.change_user({"_id": user["_id"]}, {"$set": fields, "$inc": {"profile_version": 1}},
                                      events, ctx.message_id)
    return profile_of(updated or preview, ctx.instance.settings)


async def check_email_change_allowed(store: AccountStore, user: Document, current_password: str | None,
                                     now: datetime) -> None:
    """Moving the account to another address needs the password: a session alone must not be enough."""
    if current_password is None:
        raise CommandError("validation_failed",
                           fields={"current_password": "required to change the e-mail address"})
    await check_current_password(store, user, current_password, now, field="current_password")


def apply_profile(user: Document, fields: Document) -> Document:
    """The user as it will read after `$set` of these (dotted) fields."""
    result = {**user, "profile": dict(user.get("profile") or {})}
    for path, value in fields.items():
        if path.startswith("profile."):
            result["profile"][path.removeprefix("profile.")] = value
        else:
            result[path] = value
    return result


@router.command("accounts.accept_terms", api.AcceptTerms, access=Access.AUTH)
async def accept_terms(request: api.AcceptTerms, ctx: CommandContext) -> None:
    """Accepts the vendor's current terms and privacy versions (the settings), whatever the client calls them.

    The client's names are kept beside them for the audit trail; a new version in the settings
    asks everyone again.
    """
    store, settings, now = store_of(ctx), ctx.instance.settings, now_utc()
    user = await own_user(ctx, store)
    acceptance = {"terms_version": settings.terms_version, "privacy_version": settings.privacy_version,
                  "terms_accepted_at": now, "stated_terms_version": request.terms_version,
                  "stated_privacy_version": request.privacy_version}
    await store.change_user(
        {"_id": user["_id"]}, {"$set": acceptance},
        [api.TermsAccepted(user_id=user["_id"], customer_number=user.get("customer_number"), accepted_at=now,
                           **{key: value for key, value in acceptance.items() if key != "terms_accepted_at"})],
        ctx.message_id)


def contact_owner(ctx: CommandContext) -> str:
    """Contacts belong to the customer, so colleagues share them; a user without one keeps their own.

    A contract sign-in (whose only secret is a contract number) sees that contract's contacts
    only: the customer's people and addresses are not its business.
    """
    claims = ctx.caller
    if claims.contract_number:
        return f"contract:{claims.customer_number}:{claims.contract_number}"
    return f"customer:{claims.customer_number}" if claims.customer_number else f"user:{claims.user_id}"


@router.command("accounts.list_contacts", api.ListContacts, access=Access.AUTH, replay=Replay.RERUN)
async def list_contacts(request: api.ListContacts, ctx: CommandContext) -> api.Contacts:
    contacts = await store_of(ctx).contacts_of(contact_owner(ctx))
    return api.Contacts(items=[api.Contact(contact_id=contact["_id"], name=contact["name"], email=contact["email"],
                                           phone=contact.get("phone")) for contact in contacts])


@router.command("accounts.add_contact", api.AddContact, access=Access.AUTH)
async def add_contact(request: api.AddContact, ctx: CommandContext) -> api.Contacts:
    store = store_of(ctx)
    contact_id = uuid.uuid5(uuid.NAMESPACE_URL, f"contact:{ctx.message_id}").hex if ctx.message_id \
        else uuid.uuid4().hex
    await store.add_contact({"_id": contact_id, "owner": contact_owner(ctx), "name": request.name,
                             "email": request.email, "phone": request.phone})
    return await list_contacts(api.ListContacts(), ctx)


@router.command("accounts.list_contracts", api.ListContracts, access=Access.AUTH, replay=Replay.RERUN)
async def list_contracts(request: api.ListContracts, ctx: CommandContext) -> api.Contracts:
    claims = ctx.caller
    customer = await store_of(ctx).customer(claims.customer_number) if claims.customer_number else None
    contracts = [api.Contract(**stored) for stored in ((customer or {}).get("contracts") or {}).values()]
    if claims.contract_number:  # a contract sign-in sees only its contract
        contracts = [contract for contract in contracts if contract.contract_number == claims.contract_number]
    return api.Contracts(items=[api.ContractView(**contract.model_dump(),
                                                 term_months=domain.term_months(contract.start_date, contract.end_date))
                                for contract in sorted(contracts, key=lambda contract: contract.contract_number)])


# --- operators --------------------------------------------------------------------------------------

@router.command("accounts.operator.provision_customer", api.ProvisionCustomer, access=Access.OPERATOR)
async def provision_customer(request: api.ProvisionCustomer, ctx: CommandContext) -> None:
    """An upsert of the customer and its contracts at the next `version`, written conditional on the version it was
    read at and retried when another provisioning came first: each version is issued once, and the
    `customer.provisioned` with the highest one is the customer as stored. A command re-run after a crash finds
    its id among the customer's applied commands and provisions nothing twice."""
    store = store_of(ctx)
    contracts = {contract.contract_number: contract.model_dump(mode="json") for contract in request.contracts}
    for _ in range(MAX_PROVISION_ATTEMPTS):
        read = await store.customer(request.customer_number)
        if read is not None and already_applied(read, ctx.message_id):
            return
        version = int((read or {}).get("version") or 0) + 1
        event = api.CustomerProvisioned(customer_number=request.customer_number, customer_name=request.name,
                                        contracts=request.contracts, version=version)
        fields = {"name": request.name, "contracts": contracts, "provisioned_at": now_utc(), "version": version}
        if await store.upsert_customer(request.customer_number, read, fields, [event], ctx.message_id):
            return
    raise CommandError("conflict")


@router.command("accounts.operator.list_pending_verifications", api.ListPendingVerifications,
                access=Access.OPERATOR, replay=Replay.RERUN)
async def list_pending_verifications(request: api.ListPendingVerifications, ctx: CommandContext) -> Page[api.Profile]:
    skip, limit = page_bounds(request.page, request.page_size)
    users, total = await store_of(ctx).pending_verifications(skip, limit)
    items = [profile_of(user, ctx.instance.settings).model_copy(
        update={"customer_number": user.get("requested_customer_number")}) for user in users]
    return Page[api.Profile](items=items, total=total, page=request.page, page_size=request.page_size)


@router.command("accounts.operator.decide_verification", api.DecideVerification, access=Access.OPERATOR)
async def decide_verification(request: api.DecideVerification, ctx: CommandContext) -> api.Decided:
    store = store_of(ctx)
    user = await store.user(request.user_id)
    if user is None:
        raise CommandError("not_found")
    if user["status"] != "pending_verification":
        raise CommandError("conflict", fields={"user_id": f"status is {user['status']}"})
    status = "active" if request.approve else "rejected"
    customer = user.get("requested_customer_number") if request.approve else None
    events: list[Event] = [api.VerificationDecided(**recipient(user), username=user["username"],
                                                       approved=request.approve, reason=request.reason,
                                                       customer_number=customer)]
    if request.approve:
        events.append(api.UserActivated(**recipient(user), username=user["username"], role=user["role"],
                                        customer_number=customer))
    changed = await store.change_user(
        {"_id": user["_id"], "status": "pending_verification"},
        {"$set": {"status": status, "customer_number": customer, "verification_reason": request.reason,
                  "verified_by": ctx.caller.user_id}}, events, ctx.message_id)
    if changed is None:
        raise CommandError("conflict", fields={"user_id": "decided meanwhile"})
    return api.Decided(user_id=user["_id"], status=status)


# --- events -----------------------------------------------------------------------------------------

@router.event(DeviceProvisioned)
async def remember_installed_device(event: DeviceProvisioned, ctx: EventContext) -> None:
    if event.customer_number:  # a device of no customer yet is nobody's to join
        await store_of(ctx).remember_device(event.serial_number, event.customer_number, event.version)


async def bootstrap(instance: ServiceInstance) -> None:
    """Indexes, the dummy hash for unknown users, and the first operator from the settings."""
    store = AccountStore(instance.db)
    await store.create_indexes()
    instance.state["dummy_hash"] = await new_hash(uuid.uuid4().hex)
    settings = instance.settings
    email, password = settings.bootstrap_operator_email, settings.bootstrap_operator_password.get_secret_value()
    email_key = domain.normalise_login(email)
    existing = await store.user_by_email(email_key) or await follow_bootstrap_email(store, email)
    if existing is None:
        await create_bootstrap_operator(store, email, password)
    elif existing["role"] != Role.OPERATOR.value:
        log.error("PORTAL_BOOTSTRAP_OPERATOR_EMAIL %s belongs to a %s account: no operator set up from the settings",
                  email, existing["role"])
    else:
        await follow_bootstrap_password(instance, store, existing, password)


async def create_bootstrap_operator(store: AccountStore, email: str, password: str) -> None:
    email_key = domain.normalise_login(email)
    operator_id = uuid.uuid5(uuid.NAMESPACE_URL, f"operator:{email_key}").hex
    # `operator` unless someone signed up with that name first; the operator signs in by e-mail anyway.
    for username in ("operator", f"operator-{operator_id[:8]}"):
        try:
            await store.users.insert_one({
                "_id": operator_id, "email": email, "email_key": email_key, "username": username,
                "username_key": username, "role": Role.OPERATOR.value, "bootstrap": True,
                "password_hash": await new_hash(password), "language": "en", "country": None, "status": "active",
                "customer_number": None, "profile": {}, "profile_version": 1, "created_at": now_utc(),
                "confirmation_digest": None, "reset_digest": None})
            return
        except DuplicateKeyError:
            if await store.user_by_email(email_key) or await store.user(operator_id):
                return  # another replica created it at the same moment


async def follow_bootstrap_email(store: AccountStore, email: str) -> Document | None:
    """A changed `PORTAL_BOOTSTRAP_OPERATOR_EMAIL` moves the bootstrap operator to the new address.

    The settings name one operator; changing its address must not leave a second, unreachable
    one behind, nor stop the stack (the demo loader signs in with the new address).
    """
    operator = await store.users.find_one({"bootstrap": True}) or await store.users.find_one(
        {"username_key": "operator", "role": Role.OPERATOR.value})  # made before the marker existed
    if operator is None:
        return None
    try:
        moved = await store.change_user({"_id": operator["_id"], "email_key": operator["email_key"]}, {"$set": {
            "email": email, "email_key": domain.normalise_login(email), "bootstrap": True}})
    except DuplicateKeyError:  # another replica moved it, or the address was taken meanwhile
        return await store.user_by_email(domain.normalise_login(email))
    if moved is not None:
        log.info("bootstrap operator moved from %s to %s, as the settings say", operator["email"], email)
    return moved or await store.user_by_email(domain.normalise_login(email))


async def follow_bootstrap_password(instance: ServiceInstance, store: AccountStore, operator: Document,
                                    password: str) -> None:
    """A changed `PORTAL_BOOTSTRAP_OPERATOR_PASSWORD` replaces the operator's password and ends their sessions.

    Rotating the setting must lock out whoever knew the old one. Conditional on the hash read, so
    replicas starting together change it once.
    """
    if await check_password(operator["password_hash"], password):
        return
    now = now_utc()
    revoked = api.SessionRevoked(user_id=operator["_id"], revoked_at=now, until=now + domain.SESSION_REMEMBERED)
    changed = await store.change_user({"_id": operator["_id"], "password_hash": operator["password_hash"]},
                                      {"$set": {"password_hash": await new_hash(password)}}, [revoked])
    if changed is not None:
        await instance.revocations.add(revoked)
        log.info("bootstrap operator's password follows the setting; their sessions are revoked")
