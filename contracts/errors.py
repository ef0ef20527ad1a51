"""Error codes of the catalogue and their messages in every supported language."""

from __future__ import annotations

from enum import StrEnum

LANGUAGES = ("en", "de", "nb")
DEFAULT_LANGUAGE = "en"


class ErrorCode(StrEnum):
    """Generic codes, valid for every command (CATALOG §1); services add their own below."""

    INVALID_MESSAGE = "invalid_message"
    VALIDATION_FAILED = "validation_failed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


# Service-specific codes (CATALOG §2–§3), one enum per service. A code several services raise is declared once,
# where it is first defined (e.g. `terms_not_accepted` in accounts, `file_too_large` in registration).


class AccountsErrorCode(StrEnum):
    """Specific codes of `accounts` (CATALOG §2)."""

    EMAIL_TAKEN = "email_taken"
    USERNAME_TAKEN = "username_taken"
    PASSWORD_MISMATCH = "password_mismatch"
    WEAK_PASSWORD = "weak_password"
    TERMS_NOT_ACCEPTED = "terms_not_accepted"  # also registration: devices need the terms accepted
    TOKEN_INVALID = "token_invalid"
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_LOCKED = "account_locked"
    EMAIL_NOT_CONFIRMED = "email_not_confirmed"
    PENDING_VERIFICATION = "pending_verification"


class RegistrationErrorCode(StrEnum):
    """Specific codes of `registration` (CATALOG §3) for single-device commands."""

    UNKNOWN_SERIAL = "unknown_serial"
    ALREADY_REGISTERED = "already_registered"
    INVALID_PURCHASE_DATE = "invalid_purchase_date"
    WARRANTY_NOT_ACCEPTED = "warranty_not_accepted"
    FILE_TOO_LARGE = "file_too_large"  # also a bulk upload's `reason`
    FILE_TYPE_NOT_ALLOWED = "file_type_not_allowed"
    SERIAL_OR_POSTCODE_MISMATCH = "serial_or_postcode_mismatch"


class BulkUploadCode(StrEnum):
    """`registration.bulk_upload`: why a whole file `failed` (its `reason`), and `duplicate_serial` for one row."""

    TOO_MANY_ROWS = "too_many_rows"
    NOT_A_SPREADSHEET = "not_a_spreadsheet"
    SPREADSHEET_TOO_LARGE = "spreadsheet_too_large"
    MISSING_COLUMNS = "missing_columns"
    DUPLICATE_COLUMNS = "duplicate_columns"
    DUPLICATE_SERIAL = "duplicate_serial"


class MeteringErrorCode(StrEnum):
    """Specific codes of `metering` (CATALOG §4); `submit_bulk` rows carry them too."""

    COUNTERS_INCOMPLETE = "counters_incomplete"
    UNKNOWN_COUNTER = "unknown_counter"
    READING_LOWER_THAN_LAST = "reading_lower_than_last"
    INVALID_READING_DATE = "invalid_reading_date"


class OrderingErrorCode(StrEnum):
    """Specific codes of `ordering` (CATALOG §5)."""

    MULTIPLE_DELIVERY_ADDRESSES = "multiple_delivery_addresses"
    ARTICLE_NOT_FOR_DEVICE = "article_not_for_device"
    NOT_COVERED_BY_CONTRACT = "not_covered_by_contract"
    DUPLICATE_ORDER = "duplicate_order"  # beyond the catalogue: an earlier order of the article is not delivered
    MULTIPLE_CUSTOMERS = "multiple_customers"  # beyond the catalogue: an order is for the devices of one customer
    NO_DELIVERY_ADDRESS = "no_delivery_address"  # beyond the catalogue: the device's location lacks street/city
    INVALID_TRANSITION = "invalid_transition"  # also ticketing: a status change the life cycle does not allow


class TicketingErrorCode(StrEnum):
    """Specific codes of `ticketing` (CATALOG §6); a refused transition is `invalid_transition` (ordering)."""

    OPEN_TICKET_EXISTS = "open_ticket_exists"
    ALREADY_DISPATCHED = "already_dispatched"


SERVICE_CODES: tuple[type[StrEnum], ...] = (AccountsErrorCode, RegistrationErrorCode, BulkUploadCode,
                                            MeteringErrorCode, OrderingErrorCode, TicketingErrorCode)


MESSAGES: dict[str, dict[str, str]] = {
    ErrorCode.INVALID_MESSAGE: {
        "en": "The message body is not a UTF-8 JSON object.",
        "de": "Der Nachrichteninhalt ist kein UTF-8-JSON-Objekt.",
        "nb": "Meldingen er ikke et JSON-objekt i UTF-8.",
    },
    ErrorCode.VALIDATION_FAILED: {
        "en": "Some fields are missing or invalid.",
        "de": "Einige Felder fehlen oder sind ungültig.",
        "nb": "Noen felt mangler eller er ugyldige.",
    },
    ErrorCode.UNAUTHENTICATED: {
        "en": "Please sign in again.",
        "de": "Bitte melden Sie sich erneut an.",
        "nb": "Vennligst logg inn på nytt.",
    },
    ErrorCode.FORBIDDEN: {
        "en": "You are not allowed to do this.",
        "de": "Dazu sind Sie nicht berechtigt.",
        "nb": "Du har ikke tilgang til dette.",
    },
    ErrorCode.NOT_FOUND: {
        "en": "Not found.",
        "de": "Nicht gefunden.",
        "nb": "Ikke funnet.",
    },
    ErrorCode.CONFLICT: {
        "en": "This conflicts with the current state; please reload and try again.",
        "de": "Das widerspricht dem aktuellen Stand; bitte neu laden und erneut versuchen.",
        "nb": "Dette er i konflikt med gjeldende tilstand; last inn på nytt og prøv igjen.",
    },
    ErrorCode.RATE_LIMITED: {
        "en": "Too many requests; please wait a moment.",
        "de": "Zu viele Anfragen; bitte warten Sie einen Moment.",
        "nb": "For mange forespørsler; vent litt.",
    },
    ErrorCode.INTERNAL: {
        "en": "Something went wrong on our side; nothing was changed. Please try again.",
        "de": "Bei uns ist ein Fehler aufgetreten; nichts wurde geändert. Bitte erneut versuchen.",
        "nb": "Noe gikk galt hos oss; ingenting ble endret. Prøv igjen.",
    },
    AccountsErrorCode.EMAIL_TAKEN: {
        "en": "An account with this e-mail address already exists. Please sign in, or reset your password if you have "
            "forgotten it.",
        "de": "Für diese E-Mail-Adresse gibt es bereits ein Konto. Bitte melden Sie sich an oder setzen Sie Ihr "
            "Passwort zurück, falls Sie es vergessen haben.",
        "nb": "Det finnes allerede en konto med denne e-postadressen. Logg inn, eller tilbakestill passordet hvis du "
            "har glemt det.",
    },
    AccountsErrorCode.USERNAME_TAKEN: {
        "en": "This username is already taken; please choose another one.",
        "de": "Dieser Benutzername ist bereits vergeben; bitte wählen Sie einen anderen.",
        "nb": "Dette brukernavnet er allerede i bruk; velg et annet.",
    },
    AccountsErrorCode.PASSWORD_MISMATCH: {
        "en": "The two passwords do not match; please enter the same password in both fields.",
        "de": "Die beiden Passwörter stimmen nicht überein; bitte geben Sie in beiden Feldern dasselbe Passwort ein.",
        "nb": "De to passordene er ikke like; skriv inn det samme passordet i begge feltene.",
    },
    AccountsErrorCode.WEAK_PASSWORD: {
        "en": "The password must be at least 10 characters long and must not contain your username or the part of "
            "your e-mail address before the @.",
        "de": "Das Passwort muss mindestens 10 Zeichen lang sein und darf weder Ihren Benutzernamen noch den Teil "
            "Ihrer E-Mail-Adresse vor dem @ enthalten.",
        "nb": "Passordet må ha minst 10 tegn og kan ikke inneholde brukernavnet ditt eller delen av e-postadressen "
            "før @.",
    },
    AccountsErrorCode.TERMS_NOT_ACCEPTED: {
        "en": "Please accept the terms of use and the privacy policy to continue.",
        "de": "Bitte akzeptieren Sie die Nutzungsbedingungen und die Datenschutzerklärung, um fortzufahren.",
        "nb": "Du må godta vilkårene for bruk og personvernerklæringen for å fortsette.",
    },
    AccountsErrorCode.TOKEN_INVALID: {
        "en": "This link has expired or has already been used. Please request a new one.",
        "de": "Dieser Link ist abgelaufen oder wurde bereits verwendet. Bitte fordern Sie einen neuen an.",
        "nb": "Denne lenken er utløpt eller allerede brukt. Be om en ny lenke.",
    },
    AccountsErrorCode.INVALID_CREDENTIALS: {
        "en": "The sign-in details are not correct. Please check them and try again.",
        "de": "Die Anmeldedaten sind nicht korrekt. Bitte prüfen Sie Ihre Eingaben und versuchen Sie es erneut.",
        "nb": "Innloggingsopplysningene er ikke riktige. Kontroller dem og prøv igjen.",
    },
    AccountsErrorCode.ACCOUNT_LOCKED: {
        "en": "Too many failed sign-in attempts. Please wait 15 minutes and try again, or reset your password.",
        "de": "Zu viele fehlgeschlagene Anmeldeversuche. Bitte warten Sie 15 Minuten und versuchen Sie es dann "
            "erneut, oder setzen Sie Ihr Passwort zurück.",
        "nb": "For mange mislykkede innloggingsforsøk. Vent 15 minutter og prøv igjen, eller tilbakestill passordet.",
    },
    AccountsErrorCode.EMAIL_NOT_CONFIRMED: {
        "en": "Your e-mail address is not confirmed yet. Please click the link in the e-mail we sent you (check your "
            "spam folder too), or request a new confirmation e-mail.",
        "de": "Ihre E-Mail-Adresse ist noch nicht bestätigt. Bitte klicken Sie auf den Link in der E-Mail, die wir "
            "Ihnen geschickt haben (sehen Sie auch im Spam-Ordner nach), oder fordern Sie eine neue "
            "Bestätigungs-E-Mail an.",
        "nb": "E-postadressen din er ikke bekreftet ennå. Klikk på lenken i e-posten vi sendte deg (sjekk også "
            "søppelpostmappen), eller be om en ny bekreftelses-e-post.",
    },
    AccountsErrorCode.PENDING_VERIFICATION: {
        "en": "Your account is waiting for verification: one of our staff is checking your details, which can take "
            "some time. You will receive an e-mail once it has been decided.",
        "de": "Ihr Konto wartet auf die Prüfung: Ein Mitarbeiter prüft Ihre Angaben, das kann etwas dauern. Sie "
            "erhalten eine E-Mail, sobald entschieden ist.",
        "nb": "Kontoen din venter på verifisering: en av våre medarbeidere kontrollerer opplysningene dine, og det "
            "kan ta litt tid. Du får en e-post når saken er avgjort.",
    },
    RegistrationErrorCode.UNKNOWN_SERIAL: {
        "en": "We do not recognise this serial number. Please check it against the label on the device; the serial "
            "number hint for your model shows where to find it.",
        "de": "Diese Seriennummer ist uns nicht bekannt. Bitte prüfen Sie sie anhand des Typenschilds am Gerät; der "
            "Hinweis zur Seriennummer Ihres Modells zeigt, wo sie angebracht ist.",
        "nb": "Vi kjenner ikke igjen dette serienummeret. Kontroller det mot typeskiltet på enheten; tipset om "
            "serienummer for modellen din viser hvor du finner det.",
    },
    RegistrationErrorCode.ALREADY_REGISTERED: {
        "en": "This device is already registered. If it does not appear in your device list, please contact our "
            "support.",
        "de": "Dieses Gerät ist bereits registriert. Wenn es nicht in Ihrer Geräteliste erscheint, wenden Sie sich "
            "bitte an unseren Support.",
        "nb": "Denne enheten er allerede registrert. Hvis den ikke vises i enhetslisten din, ta kontakt med "
            "kundestøtte.",
    },
    RegistrationErrorCode.INVALID_PURCHASE_DATE: {
        "en": "The purchase date is not a valid date or lies in the future. Please enter the date shown on your "
            "receipt.",
        "de": "Das Kaufdatum ist kein gültiges Datum oder liegt in der Zukunft. Bitte geben Sie das Datum auf Ihrem "
            "Kaufbeleg an.",
        "nb": "Kjøpsdatoen er ikke en gyldig dato eller ligger frem i tid. Oppgi datoen som står på kvitteringen.",
    },
    RegistrationErrorCode.WARRANTY_NOT_ACCEPTED: {
        "en": "Please accept the warranty statement to register the device.",
        "de": "Bitte akzeptieren Sie die Garantieerklärung, um das Gerät zu registrieren.",
        "nb": "Du må godta garantierklæringen for å registrere enheten.",
    },
    RegistrationErrorCode.FILE_TOO_LARGE: {
        "en": "The file is too large: at most 5 MB is allowed. Please upload a smaller file.",
        "de": "Die Datei ist zu groß: Erlaubt sind höchstens 5 MB. Bitte laden Sie eine kleinere Datei hoch.",
        "nb": "Filen er for stor: maksimalt 5 MB er tillatt. Last opp en mindre fil.",
    },
    RegistrationErrorCode.FILE_TYPE_NOT_ALLOWED: {
        "en": "This file type is not allowed. Please upload the proof of purchase as a JPG, PNG, GIF or PDF file.",
        "de": "Dieser Dateityp ist nicht erlaubt. Bitte laden Sie den Kaufbeleg als JPG-, PNG-, GIF- oder PDF-Datei "
            "hoch.",
        "nb": "Denne filtypen er ikke tillatt. Last opp kjøpsbeviset som en JPG-, PNG-, GIF- eller PDF-fil.",
    },
    MeteringErrorCode.COUNTERS_INCOMPLETE: {
        "en": "Please enter every counter of the device at once.",
        "de": "Bitte geben Sie alle Zählerstände des Geräts zusammen ein.",
        "nb": "Oppgi alle telleverkene for maskinen samtidig.",
    },
    MeteringErrorCode.UNKNOWN_COUNTER: {
        "en": "The device has no counter of that name.",
        "de": "Das Gerät hat keinen Zähler dieses Namens.",
        "nb": "Maskinen har ikke noe telleverk med det navnet.",
    },
    MeteringErrorCode.READING_LOWER_THAN_LAST: {
        "en": "The counter is lower than the last reading. The last value was probably estimated because no reading "
            "reached us in time: please contact the contract team.",
        "de": "Der Zählerstand ist niedriger als der letzte. Vermutlich wurde der letzte Stand geschätzt, weil uns "
            "kein Zählerstand rechtzeitig erreicht hat: Bitte wenden Sie sich an das Vertragsteam.",
        "nb": "Telleverket er lavere enn forrige avlesning. Forrige verdi ble trolig estimert fordi ingen avlesning "
            "nådde oss i tide: kontakt kontraktsavdelingen.",
    },
    MeteringErrorCode.INVALID_READING_DATE: {
        "en": "The reading date may be neither in the future nor before the last reading.",
        "de": "Das Ablesedatum darf weder in der Zukunft noch vor der letzten Ablesung liegen.",
        "nb": "Avlesningsdatoen kan verken være i fremtiden eller før forrige avlesning.",
    },
    OrderingErrorCode.MULTIPLE_DELIVERY_ADDRESSES: {
        "en": "One order goes to one delivery address: please place a separate order for each location.",
        "de": "Pro Bestellung kann nur eine Lieferadresse verarbeitet werden: Bitte bestellen Sie für jeden Standort "
            "separat.",
        "nb": "Én bestilling går til én leveringsadresse: legg inn en egen bestilling for hver adresse.",
    },
    OrderingErrorCode.ARTICLE_NOT_FOR_DEVICE: {
        "en": "This article is not a consumable of that device's model.",
        "de": "Dieser Artikel ist kein Verbrauchsmaterial des Gerätemodells.",
        "nb": "Denne artikkelen er ikke et forbruksmateriell for maskinens modell.",
    },
    OrderingErrorCode.NOT_COVERED_BY_CONTRACT: {
        "en": "The device has no active service contract that includes consumables.",
        "de": "Für das Gerät besteht kein aktiver Servicevertrag, der Verbrauchsmaterial einschließt.",
        "nb": "Maskinen har ingen aktiv serviceavtale som omfatter forbruksmateriell.",
    },
    OrderingErrorCode.DUPLICATE_ORDER: {
        "en": "This article was already ordered for this device and is not delivered yet. Confirm to order it "
            "again anyway.",
        "de": "Dieser Artikel wurde für dieses Gerät bereits bestellt und ist noch nicht geliefert. Bestätigen Sie, "
            "wenn Sie ihn trotzdem erneut bestellen möchten.",
        "nb": "Denne artikkelen er allerede bestilt til denne maskinen og ikke levert ennå. Bekreft for å bestille "
            "den likevel.",
    },
    OrderingErrorCode.MULTIPLE_CUSTOMERS: {
        "en": "One order is for the devices of one customer: please order separately for each.",
        "de": "Eine Bestellung gilt für die Geräte eines Kunden: Bitte bestellen Sie für jeden Kunden separat.",
        "nb": "Én bestilling gjelder maskinene til én kunde: bestill separat for hver kunde.",
    },
    OrderingErrorCode.NO_DELIVERY_ADDRESS: {
        "en": "The device has no complete location (street, postcode, city) to deliver to: please request an address "
            "change for it first.",
        "de": "Für das Gerät ist kein vollständiger Standort (Straße, PLZ, Ort) hinterlegt: Bitte beantragen Sie "
            "zuerst eine Adressänderung.",
        "nb": "Maskinen har ingen fullstendig adresse (gate, postnummer, sted) å levere til: be om adresseendring "
            "først.",
    },
    OrderingErrorCode.INVALID_TRANSITION: {
        "en": "This status change is not possible from the current status.",
        "de": "Dieser Statuswechsel ist aus dem aktuellen Status nicht möglich.",
        "nb": "Denne statusendringen er ikke mulig fra nåværende status.",
    },
    TicketingErrorCode.OPEN_TICKET_EXISTS: {
        "en": "There is already an open service request for this device. You can follow it, and add more "
            "information to it as long as no technician has been dispatched.",
        "de": "Für dieses Gerät gibt es bereits eine offene Serviceanfrage. Sie können sie verfolgen und ihr weitere "
            "Informationen hinzufügen, solange noch kein Techniker disponiert ist.",
        "nb": "Det finnes allerede en åpen serviceforespørsel for denne maskinen. Du kan følge den, og legge til mer "
            "informasjon så lenge ingen tekniker er sendt ut.",
    },
    TicketingErrorCode.ALREADY_DISPATCHED: {
        "en": "A technician has already been dispatched for this service request, so it can no longer be changed or "
            "cancelled online. Please call our service hotline.",
        "de": "Für diese Serviceanfrage ist bereits ein Techniker disponiert; sie kann online nicht mehr geändert "
            "oder storniert werden. Bitte rufen Sie unsere Service-Hotline an.",
        "nb": "En tekniker er allerede sendt ut for denne serviceforespørselen, så den kan ikke lenger endres eller "
            "kanselleres på nett. Ring vår brukerstøtte.",
    },
    RegistrationErrorCode.SERIAL_OR_POSTCODE_MISMATCH: {
        "en": "The serial number and postcode do not match any device we know. Please check both: the postcode is the "
            "one of the address where the device is installed.",
        "de": "Seriennummer und Postleitzahl passen zu keinem uns bekannten Gerät. Bitte prüfen Sie beide Angaben: "
            "Gemeint ist die Postleitzahl des Standorts, an dem das Gerät steht.",
        "nb": "Serienummeret og postnummeret passer ikke til noen enhet vi kjenner. Kontroller begge: postnummeret er "
            "det for adressen der enheten står.",
    },
    BulkUploadCode.TOO_MANY_ROWS: {
        "en": "The file lists more devices than one upload may hold. Please split the list into several files.",
        "de": "Die Datei enthält mehr Geräte, als ein Upload enthalten darf. Bitte teilen Sie die Liste auf "
            "mehrere Dateien auf.",
        "nb": "Filen inneholder flere enheter enn én opplasting kan ha. Del listen opp i flere filer.",
    },
    BulkUploadCode.NOT_A_SPREADSHEET: {
        "en": "The file could not be read as an Excel workbook (.xlsx). Please fill in the template and save it as "
            ".xlsx.",
        "de": "Die Datei konnte nicht als Excel-Arbeitsmappe (.xlsx) gelesen werden. Bitte füllen Sie die Vorlage aus "
            "und speichern Sie sie als .xlsx.",
        "nb": "Filen kunne ikke leses som en Excel-arbeidsbok (.xlsx). Fyll ut malen og lagre den som .xlsx.",
    },
    BulkUploadCode.SPREADSHEET_TOO_LARGE: {
        "en": "The workbook is too large when unpacked. Please upload only the filled-in template with your device "
            "rows.",
        "de": "Die Arbeitsmappe ist entpackt zu groß. Bitte laden Sie nur die ausgefüllte Vorlage mit Ihren "
            "Gerätezeilen hoch.",
        "nb": "Arbeidsboken er for stor når den pakkes ut. Last bare opp den utfylte malen med enhetsradene dine.",
    },
    BulkUploadCode.MISSING_COLUMNS: {
        "en": "Required columns are missing. Please use the template and keep its header row unchanged.",
        "de": "Es fehlen Pflichtspalten. Bitte verwenden Sie die Vorlage und lassen Sie deren Kopfzeile unverändert.",
        "nb": "Obligatoriske kolonner mangler. Bruk malen og la overskriftsraden være uendret.",
    },
    BulkUploadCode.DUPLICATE_COLUMNS: {
        "en": "Some columns appear twice in the header row. Please use the template and keep each column only once.",
        "de": "Einige Spalten kommen in der Kopfzeile doppelt vor. Bitte verwenden Sie die Vorlage und führen Sie "
            "jede Spalte nur einmal auf.",
        "nb": "Noen kolonner forekommer to ganger i overskriftsraden. Bruk malen og ta med hver kolonne bare én gang.",
    },
    BulkUploadCode.DUPLICATE_SERIAL: {
        "en": "This serial number already appears in an earlier row of the file; list each device only once.",
        "de": "Diese Seriennummer steht bereits in einer früheren Zeile der Datei; bitte führen Sie jedes Gerät nur "
            "einmal auf.",
        "nb": "Dette serienummeret står allerede i en tidligere rad i filen; før opp hver enhet bare én gang.",
    },
}


# Messages that name a value in force (a limit set by configuration): `message_for(code, language, **values)`
# formats these when the values are given, and falls back to the general text of MESSAGES otherwise.
MESSAGES_WITH_VALUES: dict[str, dict[str, str]] = {
    BulkUploadCode.TOO_MANY_ROWS: {
        "en": "The file lists too many devices: at most {limit} devices per file. Please split the list into "
            "several files.",
        "de": "Die Datei enthält zu viele Geräte: höchstens {limit} Geräte pro Datei. Bitte teilen Sie die Liste "
            "auf mehrere Dateien auf.",
        "nb": "Filen inneholder for mange enheter: maksimalt {limit} enheter per fil. Del listen opp i flere filer.",
    },
    # A warning of `metering.preview_reading`, not a refusal: the reading is still accepted.
    "unusually_high": {
        "en": "Far more pages on counter {counter} than this device usually prints: please check the value for a "
            "typo before you submit it.",
        "de": "Deutlich mehr Seiten auf Zähler {counter}, als dieses Gerät sonst druckt: Bitte prüfen Sie den Wert "
            "vor dem Absenden auf Tippfehler.",
        "nb": "Langt flere sider på telleverk {counter} enn denne maskinen vanligvis skriver ut: kontroller verdien "
            "for skrivefeil før du sender den.",
    },
}


def negotiate_language(header: str | None) -> str:
    """The first supported language of an `accept-language` header (`de`, `en`, `nb`), else `en`."""
    if not header:
        return DEFAULT_LANGUAGE
    for part in header.split(","):
        primary = part.split(";")[0].strip().lower().split("-")[0]
        if primary in ("no", "nn"):  # Norwegian without a written standard: Bokmål is what we have
            primary = "nb"
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def message_for(code: str, language: str, **values: object) -> str:
    """The code's message in `language` (else English); with `values`, the text naming them where there is one."""
    detailed = MESSAGES_WITH_VALUES.get(code) if values else None
    if detailed is not None:
        try:
            return (detailed.get(language) or detailed[DEFAULT_LANGUAGE]).format(**values)
        except KeyError:  # not every value the text names was given
            pass
    texts = MESSAGES.get(code)
    if texts is None:
        return code.replace("_", " ").capitalize() + "."
    return texts.get(language) or texts[DEFAULT_LANGUAGE]
