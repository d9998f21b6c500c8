"""The encryption section: one method, an optional backup, and each method's settings."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator

from engine.config.diagnostics import Diagnostic, Path, error, warning
from engine.config.model.base import HEADER_NAME_RE, is_ip
from engine.config.semantic import Context, check
from engine.policy.rules import TRUSTED_GROUP, gateway_group

_BLOCK = {"advanced": "advanced", "third_party": "third_party", "secure_portal": "secure_portal"}


@check
def method_and_backup(ctx: Context) -> Iterator[Diagnostic]:
    enc = ctx.config.encryption
    if enc.method in _BLOCK and getattr(enc, enc.method) is None:
        yield error(
            ("encryption", "method"),
            f"method `{enc.method}` needs an `encryption.{enc.method}` block",
            f"add `encryption.{enc.method}` with its settings, or choose another method",
        )
    if enc.backup != "none":
        if enc.method != "tls":
            yield error(
                ("encryption", "backup"),
                f"a backup method is only used with `method: tls` (method is `{enc.method}`)",
                "remove `backup`, or set `method: tls`",
            )
        elif getattr(enc, enc.backup) is None:
            yield error(
                ("encryption", "backup"),
                f"backup `{enc.backup}` needs an `encryption.{enc.backup}` block",
                f"add `encryption.{enc.backup}` with its settings, or set `backup: none`",
            )
    if enc.method == "secure_portal" and enc.smime is not None and enc.smime.certificates is not None:
        yield error(  # `keys` alone decrypt inbound mail: no method, so no conflict
            ("encryption", "smime"),
            "`method: secure_portal` excludes every other method, S/MIME included",
            "remove `encryption.smime`, or choose another method",
        )


def header_problem(text: str) -> tuple[str, str | None] | None:
    """Why `text` is not a usable `Name: value` header line, or None when it is."""
    if "\r" in text or "\n" in text:
        return (
            "must not contain CR or LF (that would inject headers)",
            "write the header on one line",
        )
    name, colon, value = text.partition(":")
    if not colon:
        return f"{text!r} is not of the form `Name: value`", "write it as `X-Encrypt: yes`"
    if not name or not HEADER_NAME_RE.match(name):
        return (
            f"{name!r} is not a legal header name",
            "use printable ASCII without spaces or colons, like `X-Encrypt`",
        )
    if not value.strip():
        return f"header `{name}` has no value", "write it as `Name: value`"
    if any(ord(ch) < 32 and ch != "\t" or ord(ch) == 127 for ch in value):
        return f"header `{name}` has control characters in its value", None
    return None


@check
def third_party(ctx: Context) -> Iterator[Diagnostic]:
    tp = ctx.config.encryption.third_party
    if tp is None:
        return
    base: Path = ("encryption", "third_party")
    group = ctx.config.ip_groups.get(tp.encrypted_ip_group, [])
    networks = [ipaddress.ip_network(n) for n in group]
    for i, server in enumerate(tp.servers):
        path = (*base, "servers", i)
        if is_ip(server.host):
            if server.mx_lookup:
                yield error(
                    (*path, "mx_lookup"),
                    f"MX lookup needs a host name, and `{server.host}` is an IP address",
                    "remove `mx_lookup`, or give the server's host name",
                )
            addr = ipaddress.ip_address(server.host)
            if tp.encrypted_ip_group in ctx.config.ip_groups and not any(addr in n for n in networks):
                yield error(
                    (*path, "host"),
                    f"{server.host} is not in the IP group `{tp.encrypted_ip_group}`, so mail coming back "
                    "from the encryption server would be encrypted again (a loop)",
                    f"add {server.host}/{addr.max_prefixlen} to ip_groups.{tp.encrypted_ip_group}",
                )
        else:
            yield warning(
                (*path, "host"),
                f"`{server.host}` is a host name: its addresses cannot be checked against the IP group "
                f"`{tp.encrypted_ip_group}` here",
                f"make sure every address of {server.host} is in ip_groups.{tp.encrypted_ip_group}",
            )
    seen: dict[str, str] = {}
    for which in ("encrypt", "success", "failure"):
        text = getattr(tp.headers, which)
        problem = header_problem(text)
        if problem:
            yield error((*base, "headers", which), *problem)
            continue
        normal = ":".join(part.strip().lower() for part in text.split(":", 1))
        name = normal.split(":", 1)[0]
        if which != "encrypt" and name == tp.headers.encrypt.split(":", 1)[0].strip().lower():
            yield error(
                (*base, "headers", which),
                f"the {which} header has the encrypt header's name `{name}`",
                "the gateway's result must be told apart from our request: give it its own header name",
            )
            continue
        if normal in seen:
            yield error(
                (*base, "headers", which),
                f"the {which} header is the same as the {seen[normal]} header",
                "each of encrypt, success and failure needs its own header or value",
            )
        seen[normal] = which


@check
def gateway_apart_from_internal_servers(ctx: Context) -> Iterator[Diagnostic]:
    """Mail from the gateway group is taken for the gateway's: from an internal server too."""
    tp = ctx.config.encryption.third_party
    name = gateway_group(ctx.config)
    groups = ctx.config.ip_groups
    if name == TRUSTED_GROUP or name not in groups or TRUSTED_GROUP not in groups:
        return
    internal = [ipaddress.ip_network(entry) for entry in groups[TRUSTED_GROUP]]
    if tp:
        fate = "held as a failed gateway result unless it carries the gateway's success header"
    else:
        fate = "counted as already encrypted, and DLP would never have it encrypted"
    for i, entry in enumerate(groups[name]):
        net = ipaddress.ip_network(entry)
        j = next((j for j, other in enumerate(internal) if net.overlaps(other)), None)
        if j is None:
            continue
        yield warning(
            ("ip_groups", name, i),
            f"{entry} is also in ip_groups.{TRUSTED_GROUP} ({groups[TRUSTED_GROUP][j]}): mail an internal server "
            f"sends from there would be taken for the encryption gateway's and {fate}",
            f"list only the gateway's own addresses in ip_groups.{name}, and leave them out of "
            f"ip_groups.{TRUSTED_GROUP} (the gateway may relay without being listed there)",
            see=(("ip_groups", TRUSTED_GROUP, j),),
        )


@check
def advanced(ctx: Context) -> Iterator[Diagnostic]:
    adv = ctx.config.encryption.advanced
    if adv and not HEADER_NAME_RE.match(adv.decryption_header):
        yield error(
            ("encryption", "advanced", "decryption_header"),
            f"{adv.decryption_header!r} is not a legal header name",
            "use printable ASCII without spaces or colons, like `X-Seal-Decryption`",
        )
    if adv and adv.portal_url.startswith("http://"):
        yield warning(
            ("encryption", "advanced", "portal_url"),
            "recipients would register passwords over plain HTTP",
            "use https://",
        )
    if adv is not None:
        yield from _notification_problems(ctx, ("encryption", "advanced"), adv.notification)


# Headers a message needs or the relay writes itself: none may be the decryption header.
MESSAGE_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "date", "message-id", "received", "return-path", "reply-to",
        "sender", "in-reply-to", "references", "mime-version", "x-sealrelay-dlp",
    }
)  # fmt: skip


@check
def smime(ctx: Context) -> Iterator[Diagnostic]:
    """S/MIME's two directories, and inbound decryption, which needs the second."""
    enc = ctx.config.encryption
    decrypting = enc.advanced is not None and enc.advanced.decrypt_inbound
    keys = enc.smime.keys if enc.smime is not None else None
    if decrypting and keys is None:
        yield error(
            ("encryption", "advanced", "decrypt_inbound"),
            "inbound decryption needs the internal recipients' keys, and `encryption.smime.keys` is not set",
            "set `encryption.smime.keys` to a directory of `<address>.pem` files (certificate and private key), "
            "or turn `decrypt_inbound` off",
        )
    header = enc.advanced.decryption_header if enc.advanced is not None else ""
    if decrypting and (header.lower() in MESSAGE_HEADERS or header.lower().startswith("content-")):
        yield error(
            ("encryption", "advanced", "decryption_header"),
            f"`{header}` is a header mail itself uses, and the relay removes every copy of the decryption "
            "header a sender wrote",
            "use a header of its own, like `X-Seal-Decryption`",
        )
    if enc.smime is None:
        return
    base: Path = ("encryption", "smime")
    if enc.smime.certificates is None and keys is None:
        yield error(
            base,
            "`encryption.smime` sets neither `certificates` nor `keys`, so it does nothing",
            "set `certificates` (outbound S/MIME), `keys` (inbound decryption) or both, or remove the block",
        )
    if keys is None:
        return
    if not decrypting:
        yield warning(
            (*base, "keys"),
            "the relay holds these keys but decrypts nothing: `encryption.advanced.decrypt_inbound` is off",
            "set `encryption.advanced.decrypt_inbound: true`, or remove `keys`",
        )
    if ctx.check_files:
        yield from _key_files(keys, ctx.file(keys), (*base, "keys"))


def _key_files(configured: str, directory, path: Path) -> Iterator[Diagnostic]:
    """Each key file as the relay will read it: usable, and readable by its owner only."""
    from engine.certificates.smime_keys import KeyFileError, exposed_mode, parse_key_file

    if not directory.is_dir():
        yield error(
            path, f"the key directory `{configured}` does not exist", "create it (mode 0700), or correct the path"
        )
        return
    for file in sorted(directory.glob("*.pem")):
        mode = exposed_mode(file)
        if mode is not None:
            yield warning(
                path,
                f"{file.name} holds a private key and other users may read it (mode {mode:04o})",
                f"chmod 600 {file}",
            )
        try:
            parse_key_file(file.read_bytes(), file.name.removesuffix(".pem"), file.name)
        except KeyFileError as exc:
            yield warning(path, f"{exc}: mail to {file.name.removesuffix('.pem')} will not be decrypted")
        except OSError as exc:
            yield warning(path, f"{file.name} cannot be read ({exc.strerror})")


@check
def secure_portal(ctx: Context) -> Iterator[Diagnostic]:
    portal = ctx.config.encryption.secure_portal
    if portal is None:
        return
    base = ("encryption", "secure_portal")
    if portal.url.startswith("http://"):
        yield warning((*base, "url"), "recipients would log in over plain HTTP", "use https://")
    if not ctx.config.system.internal_domains:
        for name in ("reply_all", "forward", "compose"):
            perm = getattr(portal.permissions, name)
            if perm.allowed and perm.recipients == "any":
                yield warning(
                    (*base, "permissions", name, "recipients"),
                    "`recipients: any` needs at least one internal address on each message, "
                    "and system.internal_domains is empty",
                    "add your domains to system.internal_domains",
                )
    yield from _notification_problems(ctx, base, portal.notification)


def _notification_problems(ctx: Context, base: Path, note) -> Iterator[Diagnostic]:
    """A notification block's template: one source, that exists, and renders."""
    if note.template and note.body:
        yield error((*base, "notification"), "set either `template` or `body`, not both")
    if note.template and ctx.check_files and not ctx.file(note.template).is_file():
        yield error((*base, "notification", "template"), f"template file {note.template} does not exist")
    sources = [("subject", note.subject), ("body", note.body)]
    if note.template and ctx.check_files and ctx.file(note.template).is_file():
        sources.append(("template", ctx.file(note.template).read_text(encoding="utf-8", errors="replace")))
    for field, source in sources:
        problem = _template_problem(source)
        if problem:
            yield error((*base, "notification", field), problem, "see docs/portal.md for the variables")


@functools.lru_cache(maxsize=64)
def _template_problem(source: str | None) -> str | None:
    """Why a notification template would not render (syntax, or a name it does not know).
    Remembered by the template's text: parsing it took 1 ms of every validation."""
    if not source:
        return None
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    try:
        names = meta.find_undeclared_variables(env.parse(source))
    except TemplateSyntaxError as exc:
        return f"template line {exc.lineno}: {exc.message}"
    unknown = sorted(names - NOTIFICATION_VARIABLES)
    if unknown:
        return f"unknown template variable {', '.join(unknown)} (known: {', '.join(sorted(NOTIFICATION_VARIABLES))})"
    return None


NOTIFICATION_VARIABLES = frozenset(
    {"sender", "recipient", "subject", "attachment_count", "expires", "retention", "link", "portal_url"}
)
