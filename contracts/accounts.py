"""accounts: people, customers, contracts, sessions (CATALOG §2)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, EmailStr, Field, model_validator

from contracts.base import Command, Event, Message, PageRequest, SingleLine

Language = Literal["de", "en", "nb"]
SignUpRole = Literal["customer", "dealer"]
UserStatus = Literal["pending_confirmation", "pending_verification", "active", "rejected"]
BillingPeriod = Literal["monthly", "quarterly", "semiannual", "annual"]

Email = EmailStr
Password = Field(min_length=1, max_length=128, description="Plain text; only its Argon2id hash is kept.")
Token = Field(min_length=16, max_length=256, description="The token from the link in the e-mail.")
Name = Field(min_length=1, max_length=100)
# Free text (names, addresses, labels) is `SingleLine`: a name reaches mail headers as the display name.
Subscription = Annotated[SingleLine, Field(min_length=1, max_length=60)]


class Address(Message):
    street1: SingleLine | None = Field(default=None, max_length=200)
    street2: SingleLine | None = Field(default=None, max_length=200)
    postal_code: SingleLine | None = Field(default=None, max_length=20)
    city: SingleLine | None = Field(default=None, max_length=100)
    district: SingleLine | None = Field(default=None, max_length=100)
    country: SingleLine | None = Field(default=None, max_length=100)


class Company(Message):
    name: SingleLine | None = Field(default=None, max_length=200)
    vat_number: SingleLine | None = Field(default=None, max_length=40)
    customer_type: SingleLine | None = Field(default=None, max_length=100, examples=["Business User"])
    position: SingleLine | None = Field(default=None, max_length=100)
    vertical: SingleLine | None = Field(default=None, max_length=200)
    employees: SingleLine | None = Field(default=None, max_length=50, examples=["250 - 999"])


class Communication(Message):
    """How the person wants to be kept informed (OKI profile: e-mail, SMS, phone, post)."""

    email: bool = False
    sms: bool = False
    phone: bool = False
    post: bool = False


# --- commands ---------------------------------------------------------------------------------

class Register(Command):
    """Sign up. With `customer_number` and a `serial_number` of that customer's installed base
    the user joins the customer; otherwise an operator verifies the account after confirmation."""

    routing_key: ClassVar[str] = "accounts.register"
    email: Email = Field(examples=["c.zimmermann@example.com"])
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", examples=["czimmermann"],
                          description="Letters, digits, `.`, `_`, `-`: never `@`, so a username never looks like "
                                      "someone's e-mail address.")
    password: str = Password
    password_confirm: str = Password
    language: Language = "en"
    country: SingleLine = Field(min_length=2, max_length=56, examples=["DE"])
    accept_terms: bool = Field(description="The terms and conditions; required.")
    accept_privacy: bool = Field(description="The privacy terms; required.")
    customer_number: str | None = Field(default=None, max_length=32, examples=["100234"])
    serial_number: str | None = Field(default=None, max_length=64, examples=["AK12345678"])
    role: SignUpRole = "customer"


class Registered(BaseModel):
    user_id: str
    status: UserStatus


class ConfirmEmail(Command):
    routing_key: ClassVar[str] = "accounts.confirm_email"
    token: str = Token


class Confirmed(BaseModel):
    user_id: str
    status: UserStatus


class ResendConfirmation(Command):
    routing_key: ClassVar[str] = "accounts.resend_confirmation"
    email: Email


class Login(Command):
    routing_key: ClassVar[str] = "accounts.login"
    login: str = Field(min_length=1, max_length=254, description="E-mail address or username.")
    password: str = Password
    remember_me: bool = Field(default=False, description="12 h session instead of 1 h.")


class ContractLogin(Command):
    """Sign in with customer and contract number (OKI flat-rate style): sees only that contract."""

    routing_key: ClassVar[str] = "accounts.contract_login"
    customer_number: str = Field(min_length=1, max_length=32)
    contract_number: str = Field(min_length=1, max_length=32)


class UserSummary(BaseModel):
    id: str
    email: str | None
    username: str | None
    role: str
    language: str
    customer_number: str | None
    contract_number: str | None = None


class Session(BaseModel):
    access_token: str
    expires_at: datetime
    user: UserSummary


class Logout(Command):
    routing_key: ClassVar[str] = "accounts.logout"


class RequestPasswordReset(Command):
    routing_key: ClassVar[str] = "accounts.request_password_reset"
    email: Email


class ResetPassword(Command):
    routing_key: ClassVar[str] = "accounts.reset_password"
    token: str = Token
    password: str = Password
    password_confirm: str = Password


class ChangePassword(Command):
    routing_key: ClassVar[str] = "accounts.change_password"
    current_password: str = Password
    password: str = Password
    password_confirm: str = Password


class RecoverUsername(Command):
    routing_key: ClassVar[str] = "accounts.recover_username"
    first_name: SingleLine = Name
    last_name: SingleLine = Name
    email: Email


class GetProfile(Command):
    routing_key: ClassVar[str] = "accounts.get_profile"


class UpdateProfile(Command):
    """Change any of these; a new `email` takes effect once confirmed from the mail sent to it."""

    routing_key: ClassVar[str] = "accounts.update_profile"
    email: Email | None = None
    title: SingleLine | None = Field(default=None, max_length=30)
    first_name: SingleLine | None = Field(default=None, max_length=100)
    last_name: SingleLine | None = Field(default=None, max_length=100)
    phone: SingleLine | None = Field(default=None, max_length=40)
    language: Language | None = None
    country: SingleLine | None = Field(default=None, min_length=2, max_length=56)
    address: Address | None = None
    company: Company | None = None
    communication: Communication | None = None
    subscriptions: list[Subscription] | None = Field(default=None, max_length=20,
                                                     examples=[["newsletter", "special_offers"]])
    current_password: str | None = Field(default=None, min_length=1, max_length=128,
                                         description="Required when `email` changes the address.")


class Profile(BaseModel):
    user_id: str
    email: str
    pending_email: str | None = None
    username: str
    role: str
    status: UserStatus
    customer_number: str | None = None
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    language: str
    country: str | None = None
    address: Address = Field(default_factory=Address)
    company: Company = Field(default_factory=Company)
    communication: Communication = Field(default_factory=Communication)
    subscriptions: list[str] = Field(default_factory=list)
    terms_version: str | None = Field(default=None, description="The terms version the user accepted, if any.")
    privacy_version: str | None = Field(default=None, description="The privacy version the user accepted, if any.")
    terms_accepted_at: datetime | None = Field(default=None, description="When the user accepted them.")
    current_terms_version: str | None = Field(default=None, description="The vendor's terms version now in force.")
    current_privacy_version: str | None = Field(default=None, description="The vendor's privacy version now in force.")
    terms_open: bool = Field(default=True, description="True while the current versions are not accepted: device "
                                                       "registration is refused until they are.")


class AcceptTerms(Command):
    routing_key: ClassVar[str] = "accounts.accept_terms"
    terms_version: SingleLine = Field(min_length=1, max_length=20)
    privacy_version: SingleLine = Field(min_length=1, max_length=20)


class ListContacts(Command):
    routing_key: ClassVar[str] = "accounts.list_contacts"


class AddContact(Command):
    routing_key: ClassVar[str] = "accounts.add_contact"
    name: SingleLine = Field(min_length=1, max_length=100)
    email: Email
    phone: SingleLine | None = Field(default=None, max_length=40)


class Contact(BaseModel):
    contact_id: str
    name: str
    email: str
    phone: str | None = None


class ListContracts(Command):
    routing_key: ClassVar[str] = "accounts.list_contracts"


# Numbers become keys of stored maps: no dots, no leading `$`.
NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_/-]*$"


class Contract(Message):
    contract_number: str = Field(min_length=1, max_length=32, pattern=NUMBER_PATTERN)
    type: SingleLine = Field(min_length=1, max_length=60, examples=["page_price"])
    start_date: date
    end_date: date | None = None
    billing_period: BillingPeriod = "quarterly"
    includes_consumables: bool = False

    @model_validator(mode="after")
    def ends_after_it_starts(self) -> Contract:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ContractView(Contract):
    term_months: int | None = None


class ProvisionCustomer(Command):
    """Upsert a customer and its contracts from the vendor's master data."""

    routing_key: ClassVar[str] = "accounts.operator.provision_customer"
    customer_number: SingleLine = Field(min_length=1, max_length=32, pattern=NUMBER_PATTERN)
    name: SingleLine = Field(min_length=1, max_length=200, examples=["Muster GmbH"])
    contracts: list[Contract] = Field(default_factory=list, max_length=500)


class ListPendingVerifications(PageRequest, Command):
    routing_key: ClassVar[str] = "accounts.operator.list_pending_verifications"


class DecideVerification(Command):
    routing_key: ClassVar[str] = "accounts.operator.decide_verification"
    user_id: str = Field(min_length=1, max_length=64)
    approve: bool
    reason: str | None = Field(default=None, max_length=1000)


class Decided(BaseModel):
    user_id: str
    status: UserStatus


# --- events -----------------------------------------------------------------------------------

class Recipient(Event):
    """What the notifier needs to write to a person."""

    user_id: str
    email: str
    language: Language = "en"
    first_name: str | None = None
    last_name: str | None = None


class UserRegistered(Recipient):
    """A person signed up; the mail asks them to confirm the address with `confirmation_url`."""

    routing_key: ClassVar[str] = "accounts.user.registered"
    username: str
    confirmation_url: str
    expires_at: datetime


class EmailConfirmationRequested(Recipient):
    """A confirmation link was sent again, or a new e-mail address waits for confirmation."""

    routing_key: ClassVar[str] = "accounts.email_confirmation.requested"
    username: str
    confirmation_url: str
    expires_at: datetime
    email_change: bool = Field(default=False, description="True: `email` is a new address for an existing "
                                                          "account; false: the sign-up's own address.")


class EmailChangeRequested(Recipient):
    """The account is to move to `new_email` once that address confirms; `email` is the current one, told so
    that its owner notices a change they did not make."""

    routing_key: ClassVar[str] = "accounts.email_change.requested"
    username: str
    new_email: str


class UserActivated(Recipient):
    routing_key: ClassVar[str] = "accounts.user.activated"
    username: str
    role: str
    customer_number: str | None = None


class VerificationDecided(Recipient):
    routing_key: ClassVar[str] = "accounts.user.verification_decided"
    username: str
    approved: bool
    reason: str | None = None
    customer_number: str | None = None


class PasswordResetRequested(Recipient):
    routing_key: ClassVar[str] = "accounts.password_reset.requested"
    reset_url: str
    expires_at: datetime


class PasswordChanged(Recipient):
    routing_key: ClassVar[str] = "accounts.password.changed"


class UsernameReminderRequested(Recipient):
    routing_key: ClassVar[str] = "accounts.username.reminder_requested"
    username: str


class ProfileUpdated(Recipient):
    """The recipient data after a change (the notifier keeps it)."""

    routing_key: ClassVar[str] = "accounts.profile.updated"
    username: str
    customer_number: str | None = None
    communication: Communication = Field(default_factory=Communication)
    subscriptions: list[str] = Field(default_factory=list)
    version: int = Field(description="Grows with every change; older updates arriving late are ignored.")


class TermsAccepted(Event):
    """A user accepted the vendor's terms and privacy notice in the versions current at that moment."""

    routing_key: ClassVar[str] = "accounts.terms.accepted"
    user_id: str
    customer_number: str | None = None
    terms_version: str = Field(description="The vendor's current terms version (PORTAL_TERMS_VERSION) accepted.")
    privacy_version: str = Field(description="The vendor's current privacy version (PORTAL_PRIVACY_VERSION) accepted.")
    accepted_at: datetime | None = Field(default=None, description="When; a later acceptance wins over an older one "
                                                                   "arriving late.")
    stated_terms_version: str | None = Field(default=None, description="The terms version the client named, "
                                                                        "kept for the audit trail.")
    stated_privacy_version: str | None = Field(default=None, description="The privacy version the client named.")


class SessionRevoked(Event):
    """A session (or every session of a user) may no longer be used, from now until `until`."""

    routing_key: ClassVar[str] = "accounts.session.revoked"

    session_id: str | None = Field(default=None, description="The revoked session, or none for all of the user's.")
    user_id: str | None = Field(default=None, description="With no `session_id`: every session of this user "
                                                          "issued before `revoked_at` is refused.")
    revoked_at: datetime = Field(description="When the revocation took effect (UTC).")
    until: datetime = Field(description="After this, every token it concerns has expired anyway (UTC).")

    @model_validator(mode="after")
    def names_a_session_or_a_user(self) -> SessionRevoked:
        if not (self.session_id or self.user_id):
            raise ValueError("session_id or user_id is required")
        return self


class CustomerProvisioned(Event):
    routing_key: ClassVar[str] = "accounts.customer.provisioned"
    customer_number: str
    customer_name: str
    contracts: list[Contract]
    version: int = Field(default=0, description="Grows with every provisioning of this customer; a consumer "
                         "keeps the highest it saw, so an older copy arriving late changes nothing.")


class Contacts(BaseModel):
    """The customer's contacts, the reply of `list_contacts` and `add_contact`."""

    items: list[Contact]


class Contracts(BaseModel):
    items: list[ContractView]
