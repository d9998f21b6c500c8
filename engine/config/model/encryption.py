"""`encryption`: the method for mail that must be encrypted, its backup, and each method."""

from __future__ import annotations

from typing import Literal

from engine.config.model.base import F, HostOrIP, Model, Name, Secret
from engine.config.model.transport import CipherBits, Protocol, SmtpAuth, TLSLevel
from engine.config.units import DurationField, SizeField

Method = Literal["tls", "advanced", "third_party", "secure_portal"]
Backup = Literal["none", "advanced", "third_party"]


class TLSMethod(Model):
    level: Literal["mandatory", "verify", "secure", "dane", "mta-sts"] = F(
        "mandatory",
        "TLS level for mail flagged for encryption (never weaker than mandatory)",
        "mandatory",
        "verify",
    )
    min_protocol: Protocol = F("TLSv1.2", "Lowest TLS protocol version accepted", "TLSv1.2")
    min_cipher_bits: CipherBits = F(128, "Lowest cipher strength: 128 (medium) or 256 (high)", 128)


class KDF(Model):
    name: Literal["pbkdf2-sha256", "pbkdf2-sha512"] = F(
        "pbkdf2-sha256",
        "Key derivation from the recipient's password (what WebCrypto offers in every browser)",
        "pbkdf2-sha256",
    )
    iterations: int = F(
        600000,
        "KDF iterations (OWASP: at least 600,000 for PBKDF2-SHA256)",
        600000,
        ge=100000,
        le=10_000_000,
    )


class EncryptionServer(Model):
    host: HostOrIP = F(..., "IP address or host name of the encryption server", "127.0.0.1", "encrypt.example.com")
    port: int = F(25, "SMTP port of the encryption server", 10025, ge=1, le=65535)
    mx_lookup: bool = F(False, "Route by the host name's MX record (host names only; otherwise its A record)", False)


class XHeaders(Model):
    encrypt: str = F(
        ...,
        "Header added to mail handed to the gateway for encryption, as `Name: value`",
        "X-Encrypt: yes",
    )
    success: str = F(
        ...,
        "Header the gateway adds when encryption succeeded, as `Name: value`",
        "X-Encrypt-Result: success",
    )
    failure: str = F(
        ...,
        "Header the gateway adds when encryption failed, as `Name: value`",
        "X-Encrypt-Result: failure",
    )


class ThirdParty(Model):
    """An external encryption gateway reached over SMTP and told what to do by x-headers."""

    servers: list[EncryptionServer] = F(
        ...,
        "Encryption servers, tried in order",
        [{"host": "127.0.0.1", "port": 10025}],
        min_length=1,
    )
    encrypted_ip_group: Name = F(
        "encryption_gateway",
        "IP group whose mail counts as already encrypted (prevents loops)",
        "encryption_gateway",
    )
    auth: SmtpAuth | None = F(
        None,
        "SMTP AUTH to the encryption server",
        {"username": "relay", "password": {"env": "SEAL_GATEWAY_PASSWORD"}},
    )
    headers: XHeaders = F(
        ...,
        "The three x-headers shared with the gateway",
        {
            "encrypt": "X-Encrypt: yes",
            "success": "X-Encrypt-Result: success",
            "failure": "X-Encrypt-Result: failure",
        },
    )
    tls: TLSLevel = F("opportunistic", "TLS level of the connection to the encryption servers", "opportunistic")


class Permission(Model):
    allowed: bool = F(False, "Whether portal users may do this", True)
    recipients: Literal["internal", "any"] = F(
        "internal",
        "`internal` (only internal addresses) or `any` (external too, with at least one internal address)",
        "internal",
    )


class AttachPermission(Model):
    allowed: bool = F(False, "Whether portal users may attach files", True)


class Permissions(Model):
    reply_all: Permission = F(Permission(allowed=True), "Reply to all", {"allowed": True, "recipients": "internal"})
    forward: Permission = F(Permission(), "Forward", {"allowed": False})
    compose: Permission = F(Permission(), "Compose a new secure message", {"allowed": True, "recipients": "any"})
    attach_file: AttachPermission = F(AttachPermission(), "Attach files to replies and new messages", {"allowed": True})


class Notification(Model):
    subject: str = F(
        "You have a secure message from {{ sender }}",
        "Subject of the notification (Jinja2)",
        "You have a secure message from {{ sender }}",
    )
    template: str | None = F(None, "Jinja2 file for the body (relative to the config)", "templates/notification.txt.j2")
    body: str | None = F(None, "Jinja2 body written inline (when no template file)", "Open {{ link }} to read it.")
    sender: str | None = F(
        None,
        "From address of notifications and one-time codes (default: postmaster@ the relay's fqdn)",
        "secure@example.com",
        pattern=r"^[^@\s]+@[^@\s]+$",
    )


class Advanced(Model):
    """Password-protected HTML attachment that decrypts in the browser (AES-GCM, WebCrypto)."""

    portal_url: str = F(
        ...,
        "HTTPS address where recipients register their password",
        "https://secure.example.com",
        pattern=r"^https?://\S+$",
    )
    kdf: KDF = F(KDF(), "Key derivation settings", {"name": "pbkdf2-sha256", "iterations": 600000})
    delivery: Literal["offline", "revocable"] = F(
        "offline",
        "`offline`: a recipient who made a key at the portal opens envelopes with their password, "
        "offline, for good (cannot be revoked); `revocable`: every envelope needs the key the relay "
        "holds (released at the portal after a code or sign-in; revocable, every open audited)",
        "offline",
        "revocable",
    )
    expire_after: DurationField = F(
        "90d", "How long the relay holds a message key (after this, online opening stops)", "90d", validate_default=True
    )
    max_envelope_size: SizeField = F(
        "10MB",
        "Above this the ciphertext stays at the portal and the envelope fetches it once the key is released",
        "10MB",
        validate_default=True,
    )
    notification: Notification = F(
        Notification(subject="Secure message from {{ sender }}: open the attachment"),
        "The notice the envelope is attached to",
        {"subject": "Secure message from {{ sender }}: open the attachment"},
    )
    decrypt_inbound: bool = F(
        False,
        "Decrypt inbound and internal S/MIME mail for internal recipients whose key is in "
        "`encryption.smime.keys`, whatever the method, and stamp `decryption_header` on that mail "
        "(DLP then reads the decrypted content)",
        True,
    )
    decryption_header: str = F(
        "X-Seal-Decryption",
        "Header stamped on inbound and internal mail while `decrypt_inbound` is on, whatever the "
        "method: success | failed (the reason) | not-encrypted; a copy the sender wrote is removed",
        "X-Seal-Decryption",
    )


class SecurePortal(Model):
    """Mail stays on the relay; recipients read it in the web portal."""

    url: str = F(
        ...,
        "Public HTTPS address of the portal",
        "https://secure.example.com",
        pattern=r"^https?://\S+$",
    )
    notification: Notification = F(
        Notification(),
        "The notification sent to recipients",
        {"subject": "You have a secure message from {{ sender }}"},
    )
    permissions: Permissions = F(Permissions(), "What portal users may do", {"forward": {"allowed": False}})
    retention: DurationField = F("90d", "How long messages stay in the portal", "90d", validate_default=True)
    mfa: Literal["off", "optional", "required"] = F(
        "optional",
        "TOTP second factor for portal accounts: off | optional (each user chooses) | required",
        "optional",
        "required",
    )
    code_lifetime: DurationField = F(
        "30m", "How long a one-time code sent by email stays valid", "30m", validate_default=True
    )
    session_idle: DurationField = F(
        "30m", "A portal session ends after this long without a request", "30m", validate_default=True
    )
    session_lifetime: DurationField = F(
        "12h", "A portal session ends this long after login, used or not", "12h", validate_default=True
    )
    max_upload: SizeField = F(
        "25MB", "Largest total of files attached to one reply or new message", "25MB", validate_default=True
    )
    database: str | None = F(
        None,
        "Where the portal keeps its data: absent for SQLite in data_dir; `postgresql://user@host:port/db` "
        "so several relays share one portal (they must then share `master_key`)",
        "postgresql://sealrelay@db.example.com:5432/portal",
        pattern=r"^postgresql://[^:@/\s]+(@|/)\S*$",
    )
    database_password: Secret | None = F(None, "Password of the PostgreSQL user", {"env": "SEAL_PORTAL_DB_PASSWORD"})
    master_key: Secret | None = F(
        None,
        "The key that wraps every message key (32 random bytes, base64); absent: one is made in "
        "data_dir on first use. Relays sharing a database must share it",
        {"file": "/etc/sealrelay/portal.key"},
    )


class SMime(Model):
    certificates: str | None = F(
        None, "Directory of external recipients' certificates, `<address>.pem` each: outbound S/MIME", "certs/smime"
    )
    keys: str | None = F(
        None,
        "Directory of internal recipients' certificate and unencrypted private key, `<address>.pem` each "
        "(mode 0600): inbound decryption with `encryption.advanced.decrypt_inbound`",
        "keys/smime",
    )


class Encryption(Model):
    """How mail that must be encrypted (a DLP `encrypt` action) is protected."""

    method: Method = F("tls", "Encryption method: tls | advanced | third_party | secure_portal", "tls")
    backup: Backup = F(
        "none",
        "Used when TLS fails (only with method: tls): none | advanced | third_party",
        "none",
        "advanced",
    )
    tls: TLSMethod = F(TLSMethod(), "Settings of the tls method", {"level": "mandatory"})
    advanced: Advanced | None = F(None, "Settings of the advanced method", {"portal_url": "https://secure.example.com"})
    third_party: ThirdParty | None = F(
        None,
        "Settings of the third_party method",
        {
            "servers": [{"host": "127.0.0.1", "port": 10025}],
            "headers": {
                "encrypt": "X-Encrypt: yes",
                "success": "X-Encrypt-Result: success",
                "failure": "X-Encrypt-Result: failure",
            },
        },
    )
    secure_portal: SecurePortal | None = F(
        None, "Settings of the secure_portal method", {"url": "https://secure.example.com"}
    )
    smime: SMime | None = F(
        None,
        "S/MIME: outbound for recipients whose certificate is known, inbound for internal ones whose key is held",
        {"certificates": "certs/smime"},
    )
