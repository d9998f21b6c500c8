"""The portal's web application: server-rendered pages (Starlette + Jinja2), no JavaScript.

Every page is answered with a strict Content-Security-Policy (no scripts, styles from
our own file, no framing), `no-store` caching (after logout the back button shows
nothing), and no referrer. Sessions live in the store; the browser holds only a random
token in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict). Every form carries the
session's CSRF token; a POST without it is refused (403) before anything else is read.

Who may see what is decided here, server-side, for every request: a message id that is
not the user's answers exactly like one that does not exist (404), and every action
(reply all, forward, compose, attach) is checked against `secure_portal.permissions` of
the config running now, whatever the page showed.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from engine.policy.groups import domain_of
from engine.portal import accounts, mail
from engine.portal.service import PortalService
from engine.portal.service import days as _days
from engine.portal.store import FOLDERS, PAGE, Session

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "__Host-sealrelay-portal"
FAILURES_BEFORE_SLOWDOWN = 100  # failed logins per address (or client) in an hour
SLOWDOWN = 30.0  # seconds between attempts past that
MAX_FIELDS = 50
MAX_FILES = 20

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# the one page with a script (our own file): making a key pair needs WebCrypto
KEYS_CSP = CSP.replace("default-src 'none';", "default-src 'none'; script-src 'self'; connect-src 'self';")
KEY_ITERATIONS = 600_000
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class IdConvertor(Convertor):
    """A message or key id in a path: URL-safe base64 only (no NUL for PostgreSQL, no
    surprises in the store); anything else is no route (404)."""

    regex = "[A-Za-z0-9_-]{1,100}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("portal_id", IdConvertor())


def _id(value) -> str:
    """An id from a query or form field, "" (never stored) when it is not one."""
    return value if isinstance(value, str) and re.fullmatch(IdConvertor.regex, value) else ""


class SecurityHeaders:
    """Adds the security headers to every response (pages, files, errors), and answers an
    unhandled error itself: logged with its traceback, our own 500 page to the browser, the
    connection kept (the framework's handler would re-raise and drop it)."""

    def __init__(self, app, error_page=None) -> None:
        self.app = app
        self.error_page = error_page

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        # the pages an envelope's "open online" tab goes through keep their opener (COOP
        # would sever it), so the released key can go back to the envelope
        keep_opener = scope.get("path", "").startswith(("/k/", "/login"))

        async def with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                if keep_opener:
                    names.add(b"cross-origin-opener-policy")
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            log.exception("portal: %s %s failed", scope.get("method"), scope.get("path"))
            if started or self.error_page is None:
                raise
            await self.error_page()(scope, receive, with_headers)


class Ctx:
    """One request's session (created on demand) and the cookie to set, if any."""

    def __init__(self, session: Session | None, token: str | None, new_token: str | None = None) -> None:
        self.session = session
        self.token = token
        self.new_token = new_token

    @property
    def user(self) -> str | None:
        s = self.session
        return s.address if s and s.address and s.stage == "full" else None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session else ""


class Portal:
    def __init__(self, service: PortalService) -> None:
        self.service = service
        self.store = service.store
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["datetime"] = _when
        self.env.filters["filesize"] = _size
        self.env.filters["days"] = _days
        self.env.filters["isotime"] = _isotime

    @property
    def settings(self):
        return self.service.settings

    def internal(self, address: str) -> bool:
        return self.service.wiring.live().is_internal(domain_of(address))

    # -- plumbing --------------------------------------------------------------------------

    async def ctx(self, request: Request, *, create: bool = False) -> Ctx:
        token = request.cookies.get(COOKIE)
        settings = self.settings
        session = None
        if token and len(token) < 100:
            session = await run_in_threadpool(
                self.store.session, token, idle=settings.session_idle, lifetime=settings.session_lifetime
            )
        if session is None and create:
            return await self.new_session(None, "anonymous")
        return Ctx(session, token if session else None)

    async def new_session(self, address: str | None, stage: str, authn: str | None = None) -> Ctx:
        token = secrets.token_urlsafe(32)
        await run_in_threadpool(self.store.new_session, token, address, stage, secrets.token_urlsafe(24), authn)
        settings = self.settings
        session = await run_in_threadpool(
            self.store.session, token, idle=settings.session_idle, lifetime=settings.session_lifetime
        )
        return Ctx(session, token, token)

    def render(self, ctx: Ctx, template: str, status: int = 200, **values) -> HTMLResponse:
        page = self.env.get_template(template).render(
            csrf=ctx.csrf, user=ctx.user, settings=self.settings, folders=FOLDERS, **values
        )
        return self.finish(ctx, HTMLResponse(page, status_code=status))

    def redirect(self, ctx: Ctx, url: str) -> Response:
        return self.finish(ctx, RedirectResponse(url, status_code=303))

    def finish(self, ctx: Ctx, response: Response) -> Response:
        if ctx.new_token:
            response.set_cookie(
                COOKIE, ctx.new_token, path="/", secure=True, httponly=True, samesite="strict", max_age=None
            )
        return response

    async def form(self, request: Request, ctx: Ctx):
        """The POSTed form, after the CSRF check (403 when the token is missing or wrong)."""
        try:
            form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=self.max_part())
        except Exception:  # malformed or over a limit
            raise HTTPException(400, "The form could not be read.") from None
        sent = form.get("csrf")
        if not ctx.session or not isinstance(sent, str) or not secrets.compare_digest(sent, ctx.session.csrf):
            raise HTTPException(
                403, "This form has expired or did not come from this portal. Reload the page and try again."
            )
        return form

    def max_part(self) -> int:
        return int(self.settings.max_upload) + 1024 * 1024

    def error(self, ctx: Ctx, status: int, text: str) -> HTMLResponse:
        return self.render(ctx, "error.html", status, status_code=status, text=text)

    def not_found(self, ctx: Ctx) -> HTMLResponse:
        return self.error(ctx, 404, "There is no such message, or it has expired.")

    def client(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def audit(self, event: str, **fields) -> None:
        await run_in_threadpool(lambda: self.store.audit(event, **fields))

    def gate(self, ctx: Ctx) -> Response | None:
        """Where a request that needs a signed-in user goes instead, or None when it may go on."""
        s = ctx.session
        if s is None or s.address is None:
            return self.redirect(ctx, "/login")
        if s.stage == "totp":
            return self.redirect(ctx, "/login/totp")
        if s.stage == "enroll":
            return self.redirect(ctx, "/account/totp")
        return None

    # -- login -----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        return self.redirect(ctx, "/inbox" if ctx.user else "/login")

    async def login(self, request: Request) -> Response:
        ctx = await self.ctx(request, create=True)
        if request.method == "GET":
            return self.render(ctx, "login.html", bye=request.query_params.get("bye") == "1")
        form = await self.form(request, ctx)
        address = _address(form.get("address"))
        if address is None:
            return self.render(ctx, "login.html", 400, problem="Enter your email address.")
        account = await run_in_threadpool(self.store.account, address)
        phrase = (
            account.phrase if account and account.phrase else accounts.decoy_phrase(self.service.decoy_secret, address)
        )
        return self.render(ctx, "password.html", address=address, phrase=phrase)

    async def login_password(self, request: Request) -> Response:
        ctx = await self.ctx(request, create=True)
        form = await self.form(request, ctx)
        address = _address(form.get("address"))
        password = str(form.get("password") or "")
        if address is None:
            return self.redirect(ctx, "/login")
        ip = self.client(request)
        wait = await run_in_threadpool(self.throttled, f"login:{address}", f"loginip:{ip}")
        if wait:
            return self.slowed(ctx, wait)
        account = await run_in_threadpool(self.store.account, address)
        ok = await run_in_threadpool(accounts.verify_password, account.password if account else None, password)
        if not ok:
            await run_in_threadpool(self.store.note, f"login:{address}", f"loginip:{ip}")
            await self.audit("login_failed", address=address, ip=ip)
            phrase = (
                account.phrase
                if account and account.phrase
                else accounts.decoy_phrase(self.service.decoy_secret, address)
            )
            return self.render(
                ctx,
                "password.html",
                401,
                address=address,
                phrase=phrase,
                problem="That address and password do not match.",
            )
        if accounts.needs_rehash(account.password):
            await run_in_threadpool(self.store.set_password, address, accounts.hash_password(password))
        return await self.signed_in(request, ctx, address, "password")

    def throttled(self, *keys: str) -> float:
        """Seconds to wait before the next attempt (0: go ahead): past the limit of failures
        in an hour, one attempt per `SLOWDOWN` seconds. Never a lockout."""
        now = self.store.clock()
        wait = 0.0
        for key in keys:
            count, last = self.store.recent(key, 3600)
            if count >= FAILURES_BEFORE_SLOWDOWN and last is not None:
                wait = max(wait, SLOWDOWN - (now - last))
        return max(wait, 0.0)

    def slowed(self, ctx: Ctx, wait: float) -> Response:
        response = self.render(
            ctx,
            "error.html",
            429,
            status_code=429,
            text=f"Too many failed attempts for this address. Try again in {int(wait) + 1} seconds.",
        )
        response.headers["retry-after"] = str(int(wait) + 1)
        return response

    async def signed_in(
        self, request: Request, old: Ctx, address: str, authn: str, next_url: str = "/inbox"
    ) -> Response:
        """A new session (a fresh id: no fixation) at the stage the account's factors call for."""
        if old.session:
            await run_in_threadpool(self.store.end_session, old.session.id)
        account = await run_in_threadpool(self.store.account, address)
        mfa = self.settings.mfa
        if mfa != "off" and account and account.totp:
            stage = "totp"
        elif mfa == "required":
            stage = "enroll"
        else:
            stage = "full"
        ctx = await self.new_session(address, stage, authn)
        await run_in_threadpool(self.store.set_pending, ctx.session.id, json.dumps({"next": next_url}))
        if stage == "full":
            await self.audit("login", address=address, ip=self.client(request), detail=authn)
        return self.redirect(ctx, {"totp": "/login/totp", "enroll": "/account/totp", "full": next_url}[stage])

    async def login_totp(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        s = ctx.session
        if s is None or s.stage != "totp":
            return self.redirect(ctx, "/login")
        if request.method == "GET":
            return self.render(ctx, "totp.html")
        form = await self.form(request, ctx)
        ip = self.client(request)
        wait = await run_in_threadpool(self.throttled, f"login:{s.address}", f"loginip:{ip}")
        if wait:
            return self.slowed(ctx, wait)
        account = await run_in_threadpool(self.store.account, s.address)
        if not (
            account and account.totp and accounts.totp_ok(account.totp, str(form.get("code") or ""), self.store.clock())
        ):
            await run_in_threadpool(self.store.note, f"login:{s.address}", f"loginip:{ip}")
            await self.audit("login_failed", address=s.address, ip=ip, detail="totp")
            return self.render(
                ctx, "totp.html", 401, problem="That code is not right. Use the current code from your app."
            )
        await run_in_threadpool(self.store.set_stage, s.id, "full", f"{s.authn}+totp")
        await self.audit("login", address=s.address, ip=ip, detail=f"{s.authn}+totp")
        return self.redirect(ctx, _next(s))

    async def login_code(self, request: Request) -> Response:
        """Sign in with a code mailed to the address (no password, or a forgotten one)."""
        ctx = await self.ctx(request, create=True)
        if request.method == "GET":
            return self.render(ctx, "code_request.html")
        form = await self.form(request, ctx)
        address = _address(form.get("address"))
        if address is None:
            return self.render(ctx, "code_request.html", 400, problem="Enter your email address.")
        known = await run_in_threadpool(self.store.known, address)
        # the same page, and the same answer to a wrong code, whether or not the portal knows it
        await run_in_threadpool(lambda: self.service.send_code(address, "login", self.client(request), deliver=known))
        await run_in_threadpool(
            self.store.set_pending, ctx.session.id, json.dumps({"address": address, "next": "/inbox"})
        )
        return self.redirect(ctx, "/login/code/enter")

    async def message_link(self, request: Request) -> Response:
        """The link in a notification: the message for its owner, else the way in."""
        msg_id = request.path_params["msg_id"]
        ctx = await self.ctx(request, create=True)
        if ctx.user:
            owner = await run_in_threadpool(self.store.exists, msg_id)
            if owner != ctx.user:
                return self.not_found(ctx)
            return self.redirect(ctx, f"/message/{msg_id}")
        return self.render(ctx, "landing.html", msg_id=msg_id)

    async def message_code(self, request: Request) -> Response:
        msg_id = request.path_params["msg_id"]
        return await self.code_to_owner(request, self.store.exists, msg_id, f"/message/{msg_id}")

    async def code_to_owner(self, request: Request, owner_of, ident: str, next_url: str) -> Response:
        """Mail a code to the owner of a message or a held key (found by `owner_of(ident)`),
        then the code page. An unknown id answers alike: nothing is mailed, and the page
        names no address."""
        ctx = await self.ctx(request, create=True)
        await self.form(request, ctx)
        owner = await run_in_threadpool(owner_of, ident)
        state = "sent"
        if owner:
            state = await run_in_threadpool(self.service.send_code, owner, "login", self.client(request))
        pending = {
            "address": owner,
            "next": next_url,
            "masked": _mask(owner) if owner else "the address the message was sent to",
        }
        await run_in_threadpool(self.store.set_pending, ctx.session.id, json.dumps(pending))
        return self.redirect(ctx, "/login/code/enter" + ("?wait=1" if state == "wait" else ""))

    async def code_enter(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        s = ctx.session
        pending = json.loads(s.pending) if s and s.pending else {}
        if not pending or "next" not in pending:
            return self.redirect(ctx, "/login/code")
        masked = pending.get("masked") or (_mask(pending["address"]) if pending.get("address") else "")
        minutes = self.settings.code_lifetime // 60
        if request.method == "GET":
            return self.render(
                ctx,
                "code_enter.html",
                masked=masked,
                minutes=minutes,
                wait=request.query_params.get("wait") == "1",
                resent=request.query_params.get("resent") == "1",
            )
        form = await self.form(request, ctx)
        address = pending.get("address")
        ip = self.client(request)
        result = "expired"
        if address:
            wait = await run_in_threadpool(self.throttled, f"login:{address}", f"loginip:{ip}")
            if wait:
                return self.slowed(ctx, wait)
            result = await run_in_threadpool(self.store.use_code, address, "login", str(form.get("code") or ""))
        if result != "ok":
            if address:
                await run_in_threadpool(self.store.note, f"login:{address}", f"loginip:{ip}")
                await self.audit("login_failed", address=address, ip=ip, detail=f"code {result}")
            problem = (
                "That code is not right. Check the latest mail from the portal."
                if result == "wrong"
                else "That code has expired or was already used. Ask for a new one."
            )
            return self.render(ctx, "code_enter.html", 401, masked=masked, minutes=minutes, problem=problem)
        return await self.signed_in(request, ctx, address, "code", pending["next"])

    async def code_resend(self, request: Request) -> Response:
        """Another code to the address of the login in progress (rate limited like every code)."""
        ctx = await self.ctx(request)
        await self.form(request, ctx)
        pending = json.loads(ctx.session.pending) if ctx.session and ctx.session.pending else {}
        state = "sent"
        if pending.get("address"):
            state = await run_in_threadpool(self.service.send_code, pending["address"], "login", self.client(request))
        return self.redirect(ctx, "/login/code/enter?" + ("wait=1" if state == "wait" else "resent=1"))

    async def logout(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        await self.form(request, ctx)
        if ctx.session:
            await run_in_threadpool(self.store.end_session, ctx.session.id)
            if ctx.session.address:
                await self.audit("logout", address=ctx.session.address, ip=self.client(request))
        response = RedirectResponse("/login?bye=1", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- the mailbox -----------------------------------------------------------------------

    async def folder(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        name = request.url.path.strip("/")
        page = _int(request.query_params.get("page"), 0)
        rows, total = await run_in_threadpool(lambda: self.store.folder(ctx.user, name, page=page))
        return self.render(
            ctx,
            "mailbox.html",
            folder=name,
            rows=rows,
            total=total,
            page=page,
            pages=max(1, -(-total // PAGE)),
            done=request.query_params.get("done"),
        )

    async def search(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        query = (request.query_params.get("q") or "")[:200]
        rows = await run_in_threadpool(self.store.search, ctx.user, query) if query.strip() else []
        return self.render(
            ctx, "mailbox.html", folder="search", rows=rows, total=len(rows), page=0, pages=1, query=query
        )

    async def message(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        msg_id = request.path_params["msg_id"]
        found = await run_in_threadpool(self.store.get, ctx.user, msg_id)
        if found is None:
            return self.not_found(ctx)
        row, raw = found
        readable = await run_in_threadpool(mail.read, raw)
        if not row.seen:
            await run_in_threadpool(self.store.mark_seen, ctx.user, msg_id)
        await self.audit("open", address=ctx.user, message_id=msg_id, ip=self.client(request))
        account = await run_in_threadpool(self.store.account, ctx.user)
        return self.render(
            ctx,
            "message.html",
            row=row,
            message=readable,
            permissions=self.settings.permissions,
            offer_password=account is None or account.password is None,
        )

    async def attachment(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        msg_id, index = request.path_params["msg_id"], request.path_params["index"]
        found = await run_in_threadpool(self.store.get, ctx.user, msg_id)
        if found is None:
            return self.not_found(ctx)
        readable = await run_in_threadpool(mail.read, found[1])
        if not 0 <= index < len(readable.attachments):
            return self.not_found(ctx)
        item = readable.attachments[index]
        await self.audit("download", address=ctx.user, message_id=msg_id, ip=self.client(request), detail=item.name)
        return Response(
            item.data,
            media_type="application/octet-stream",
            headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(item.name)}"},
        )

    async def move(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        await self.form(request, ctx)
        msg_id, action = request.path_params["msg_id"], request.path_params["action"]
        do = {"trash": self.store.trash, "restore": self.store.restore, "delete": self.store.delete}.get(action)
        if do is None or not await run_in_threadpool(do, ctx.user, msg_id):
            return self.not_found(ctx)
        await self.audit(action, address=ctx.user, message_id=msg_id, ip=self.client(request))
        return self.redirect(
            ctx,
            {"trash": "/inbox?done=trashed", "restore": "/trash?done=restored", "delete": "/trash?done=deleted"}[
                action
            ],
        )

    # -- writing ---------------------------------------------------------------------------

    async def compose(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        if request.method == "POST":
            return await self.send(request, ctx)
        mode = request.query_params.get("mode", "new")
        source = _id(request.query_params.get("source", ""))
        refused = self.refusal(mode)
        if refused:
            return self.error(ctx, 403, refused)
        draft = {"to": "", "cc": "", "subject": "", "body": ""}
        original = None
        if mode != "new":
            found = await run_in_threadpool(self.store.get, ctx.user, source)
            if found is None:
                return self.not_found(ctx)
            original = await run_in_threadpool(mail.read, found[1])
            draft = self.draft(ctx.user, mode, original)
        return self.compose_page(ctx, 200, mode, source, draft, original)

    def compose_page(self, ctx: Ctx, status: int, mode, source, draft, original, problem: str | None = None):
        """The compose form, with what the user wrote kept and `problem` said when refused."""
        return self.render(
            ctx,
            "compose.html",
            status,
            mode=mode,
            source=source,
            draft=draft,
            original=original,
            permissions=self.settings.permissions,
            problem=problem,
        )

    def refusal(self, mode: str) -> str | None:
        perms = self.settings.permissions
        allowed = {
            "reply": True,
            "all": perms.reply_all.allowed,
            "forward": perms.forward.allowed,
            "new": perms.compose.allowed,
        }
        if mode not in allowed:
            return "Unknown action."
        if not allowed[mode]:
            what = {"all": "reply to all", "forward": "forward messages", "new": "write new messages"}[mode]
            return f"Your organisation does not allow you to {what} from the secure portal."
        return None

    def draft(self, user: str, mode: str, original: mail.Readable) -> dict:
        head = original.head
        sender = mail.addresses(head.sender)
        subject = head.subject
        quoted = "\n".join("> " + line for line in original.text.splitlines())
        if mode == "forward":
            return {
                "to": "",
                "cc": "",
                "subject": _prefixed("Fwd", subject),
                "body": f"\n\n--- Forwarded message ---\nFrom: {head.sender}\nSubject: {subject}\n\n{original.text}",
            }
        to = list(sender)
        cc: list[str] = []
        if mode == "all":
            cc = [a for a in (*head.to, *head.cc) if a != user and a not in to]
        return {
            "to": ", ".join(to),
            "cc": ", ".join(cc),
            "subject": _prefixed("Re", subject),
            "body": f"\n\n{head.sender} wrote:\n{quoted}",
        }

    async def send(self, request: Request, ctx: Ctx) -> Response:
        form = await self.form(request, ctx)
        mode = str(form.get("mode") or "new")
        refused = self.refusal(mode)
        if refused:
            return self.error(ctx, 403, refused)
        perms = self.settings.permissions
        source = _id(form.get("source"))
        original = None
        if mode != "new":
            found = await run_in_threadpool(self.store.get, ctx.user, source)
            if found is None:
                return self.not_found(ctx)
            original = await run_in_threadpool(mail.read, found[1])
        if mode == "reply":  # to the one who wrote, whatever the form says
            to, cc = list(mail.addresses(original.head.sender))[:1], []
        else:
            to, cc = _addresses(form.get("to")), _addresses(form.get("cc"))
        if mode == "all":  # only people who were on the message
            known = set(mail.addresses(original.head.sender)) | set(original.head.to) | set(original.head.cc)
            if any(a not in known for a in to + cc):
                return self.error(ctx, 403, "Reply all goes only to the people on the original message.")
        recipients = list(dict.fromkeys(a for a in to + cc if a != ctx.user))
        rule = {"reply": None, "all": perms.reply_all, "forward": perms.forward, "new": perms.compose}[mode]
        problem = self.recipients_problem(recipients, rule)
        draft = {k: str(form.get(k) or "") for k in ("to", "cc", "subject", "body")}
        if problem:
            return self.compose_page(ctx, 403, mode, source, draft, original, problem)
        files = []
        for item in form.getlist("files"):
            if isinstance(item, UploadFile) and item.filename:
                files.append(
                    mail.Attachment(mail.clean_name(item.filename), item.content_type or "", await item.read())
                )
        if files and not perms.attach_file.allowed:
            return self.error(ctx, 403, "Your organisation does not allow attaching files in the secure portal.")
        if mode == "forward" and original is not None:
            files = list(original.attachments) + files
        if sum(len(f.data) for f in files) > self.settings.max_upload:
            return self.compose_page(
                ctx,
                413,
                mode,
                source,
                draft,
                original,
                f"Attachments may total at most {self.settings.max_upload:,} bytes.",
            )
        subject = " ".join(draft["subject"].split())[:300] or "(no subject)"
        live = self.service.wiring.live()
        raw = mail.compose(
            ctx.user,
            to,
            cc,
            subject,
            draft["body"][:1_000_000],
            files,
            domain=live.config.system.fqdn,
            in_reply_to=original.message_id if original and mode in ("reply", "all") else "",
            references=original.references if original else "",
        )
        verdict = await run_in_threadpool(self.service.submit, ctx.user, recipients, raw, self.client(request))
        if verdict.kind.value != "accept":
            log.info("portal message from %s refused: %s", ctx.user, verdict.text)
            return self.compose_page(
                ctx, 422, mode, source, draft, original, f"The message was not sent: {verdict.text}."
            )
        readable = await run_in_threadpool(mail.read, raw)
        expires = self.store.clock() + self.settings.retention
        await run_in_threadpool(
            lambda: self.store.put(
                ctx.user, "sent", raw, readable.head, expires=expires, text=mail.searchable(readable)
            )
        )
        await self.audit(
            "sent",
            address=ctx.user,
            ip=self.client(request),
            detail=f"{mode} to {len(recipients)} recipients: {verdict.text}",
        )
        # the relay accepted it; DLP may still have held it for review or blocked it
        outcome = (
            "held"
            if "held for review" in verdict.text
            else "blocked"
            if "blocked by policy" in verdict.text
            else "sent"
        )
        return self.redirect(ctx, f"/sent?done={outcome}")

    def recipients_problem(self, recipients: list[str], rule) -> str | None:
        if not recipients:
            return "Add at least one recipient."
        if len(recipients) > 100:
            return "A message from the portal may have at most 100 recipients."
        if rule is None:
            return None
        internal = [a for a in recipients if self.internal(a)]
        domains = ", ".join(self.service.wiring.live().config.system.internal_domains) or "your organisation"
        if rule.recipients == "internal" and len(internal) != len(recipients):
            outside = ", ".join(a for a in recipients if a not in internal)
            return f"You can only send to addresses at {domains}. Not allowed: {outside}."
        if not internal:
            return f"At least one recipient must be an address at {domains}."
        return None

    # -- account ---------------------------------------------------------------------------

    async def account(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        account = await run_in_threadpool(self.store.account, ctx.user)
        if request.method == "GET":
            return self.render(ctx, "account.html", account=account, done=request.query_params.get("done"))
        form = await self.form(request, ctx)
        password, again = str(form.get("password") or ""), str(form.get("again") or "")
        phrase = " ".join(str(form.get("phrase") or "").split())[:100]
        problem = None
        if account and account.password:
            current = str(form.get("current") or "")
            if not await run_in_threadpool(accounts.verify_password, account.password, current):
                problem = "Your current password is not right."
        if not problem and password != again:
            problem = "The two passwords differ."
        if not problem:
            strength = accounts.strength(password, ctx.user)
            problem = None if strength.ok else strength.problem
        if not problem and not phrase and not (account and account.phrase):
            problem = "Choose a security phrase: the portal shows it when you sign in, so you know it is the real one."
        if problem:
            return self.render(ctx, "account.html", 400, account=account, problem=problem)
        await run_in_threadpool(self.store.set_password, ctx.user, accounts.hash_password(password), phrase or None)
        await run_in_threadpool(lambda: self.store.end_sessions_of(ctx.user, keep=ctx.session.id))
        await self.audit("password_set", address=ctx.user, ip=self.client(request))
        return self.redirect(ctx, "/account?done=password")

    async def totp(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        s = ctx.session
        if s is None or s.address is None or s.stage not in ("full", "enroll"):
            return self.redirect(ctx, "/login")
        if self.settings.mfa == "off":
            return self.error(ctx, 404, "Two-step sign-in is not used by this portal.")
        pending = json.loads(s.pending) if s.pending else {}
        if request.method == "GET" or not pending.get("totp"):
            secret = accounts.new_totp_secret()
            pending["totp"] = secret
            await run_in_threadpool(self.store.set_pending, s.id, json.dumps(pending))
            qr = accounts.totp_qr_svg(secret, s.address, self.settings.url.split("//", 1)[-1].split("/")[0])
            return self.render(ctx, "enroll.html", secret=secret, qr=qr, required=s.stage == "enroll")
        form = await self.form(request, ctx)
        secret = pending["totp"]
        if not accounts.totp_ok(secret, str(form.get("code") or ""), self.store.clock()):
            qr = accounts.totp_qr_svg(secret, s.address, self.settings.url.split("//", 1)[-1].split("/")[0])
            return self.render(
                ctx,
                "enroll.html",
                400,
                secret=secret,
                qr=qr,
                required=s.stage == "enroll",
                problem="That code is not right; check the time on your phone and try the current code.",
            )
        await run_in_threadpool(self.store.ensure_account, s.address)
        await run_in_threadpool(self.store.set_totp, s.address, secret)
        pending.pop("totp", None)
        await run_in_threadpool(self.store.set_pending, s.id, json.dumps(pending))
        await run_in_threadpool(self.store.set_stage, s.id, "full", f"{s.authn}+totp")
        await self.audit("totp_enabled", address=s.address, ip=self.client(request))
        return self.redirect(ctx, _next(s) if s.stage == "enroll" else "/account?done=totp")

    async def totp_off(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        form = await self.form(request, ctx)
        if self.settings.mfa == "required":
            return self.error(ctx, 403, "Your organisation requires two-step sign-in.")
        account = await run_in_threadpool(self.store.account, ctx.user)
        if not (
            account and account.totp and accounts.totp_ok(account.totp, str(form.get("code") or ""), self.store.clock())
        ):
            return self.render(ctx, "account.html", 400, account=account, problem="That code is not right.")
        await run_in_threadpool(self.store.set_totp, ctx.user, None)
        await self.audit("totp_disabled", address=ctx.user, ip=self.client(request))
        return self.redirect(ctx, "/account?done=totp-off")

    # -- key release (the advanced method) -------------------------------------------------

    async def release(self, request: Request) -> Response:
        """A held message key, to its owner's browser (JSON), after sign-in by code or password."""
        ctx = await self.ctx(request)
        key_id = request.path_params["key_id"]
        if not ctx.user:
            return JSONResponse({"error": "sign in first", "login": f"/k/{key_id}"}, status_code=401)
        held = await run_in_threadpool(self.store.held_key, key_id)
        if held is None or held.owner != ctx.user:
            return JSONResponse({"error": "no such key"}, status_code=404)
        if held.key is None:
            reason = "revoked" if held.revoked else "expired"
            await self.audit("key_refused", address=ctx.user, message_id=key_id, ip=self.client(request), detail=reason)
            text = "this message was revoked" if held.revoked else "this message has expired"
            return JSONResponse({"error": text}, status_code=410)
        await run_in_threadpool(self.store.mark_released, key_id)
        await self.audit("key_released", address=ctx.user, message_id=key_id, ip=self.client(request))
        import base64

        return JSONResponse({"key": base64.b64encode(held.key).decode(), "data": held.data_id})

    async def key_link(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]
        ctx = await self.ctx(request, create=True)
        if ctx.user:
            held = await run_in_threadpool(self.store.held_key, key_id)
            if held is None or held.owner != ctx.user:
                return self.not_found(ctx)
            response = self.render(ctx, "key.html", key_id=key_id)
            response.headers["content-security-policy"] = KEYS_CSP
            return response
        await run_in_threadpool(self.store.set_pending, ctx.session.id, json.dumps({"next": f"/k/{key_id}"}))
        return self.render(ctx, "landing.html", msg_id=None, key_id=key_id)

    async def key_data(self, request: Request) -> Response:
        """An envelope's ciphertext kept here (too large for the file): to anyone who has the
        id, from anywhere (the envelope is a local file); useless without the released key."""
        data = await run_in_threadpool(self.store.get_data, request.path_params["key_id"])
        headers = {"access-control-allow-origin": "*"}
        if data is None:
            return Response(b"", status_code=404, headers=headers)
        return Response(data, media_type="application/octet-stream", headers=headers)

    async def key_code(self, request: Request) -> Response:
        key_id = request.path_params["key_id"]

        def owner_of(ident: str) -> str | None:
            held = self.store.held_key(ident)
            return held.owner if held else None

        return await self.code_to_owner(request, owner_of, key_id, f"/k/{key_id}")

    # -- a key pair made in the browser (the advanced method's offline envelopes) -----------

    async def keys(self, request: Request) -> Response:
        ctx = await self.ctx(request)
        if (gone := self.gate(ctx)) is not None:
            return gone
        if request.method == "GET":
            account = await run_in_threadpool(self.store.account, ctx.user)
            live = self.service.wiring.live()
            advanced = live.config.encryption.advanced
            response = self.render(
                ctx,
                "keys.html",
                iterations=advanced.kdf.iterations if advanced else KEY_ITERATIONS,
                registered=account.key_created if account and account.public_key else None,
            )
            response.headers["content-security-policy"] = KEYS_CSP
            return response
        sent = request.headers.get("x-csrf-token", "")
        if not ctx.session or not secrets.compare_digest(sent, ctx.session.csrf):
            return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        body = await request.body()
        if len(body) > 16384:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            public, private = browser_key(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"not a key this portal accepts: {exc}"}, status_code=400)
        await run_in_threadpool(self.store.ensure_account, ctx.user)
        await run_in_threadpool(self.store.set_browser_key, ctx.user, public, private)
        await self.audit("key_registered", address=ctx.user, ip=self.client(request))
        return JSONResponse({"saved": True})

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        ctx = Ctx(None, None)
        return self.error(ctx, exc.status_code, str(exc.detail))


def make_app(service: PortalService) -> Starlette:
    portal = Portal(service)
    routes = [
        Route("/", portal.home),
        Route("/login", portal.login, methods=["GET", "POST"]),
        Route("/login/password", portal.login_password, methods=["POST"]),
        Route("/login/totp", portal.login_totp, methods=["GET", "POST"]),
        Route("/login/code", portal.login_code, methods=["GET", "POST"]),
        Route("/login/code/enter", portal.code_enter, methods=["GET", "POST"]),
        Route("/login/code/resend", portal.code_resend, methods=["POST"]),
        Route("/logout", portal.logout, methods=["POST"]),
        Route("/m/{msg_id:portal_id}", portal.message_link),
        Route("/m/{msg_id:portal_id}/code", portal.message_code, methods=["POST"]),
        *[Route(f"/{name}", portal.folder) for name in FOLDERS],
        Route("/search", portal.search),
        Route("/message/{msg_id:portal_id}", portal.message),
        Route("/message/{msg_id:portal_id}/attachment/{index:int}", portal.attachment),
        Route("/message/{msg_id:portal_id}/{action:str}", portal.move, methods=["POST"]),
        Route("/compose", portal.compose, methods=["GET", "POST"]),
        Route("/account", portal.account, methods=["GET", "POST"]),
        Route("/account/totp", portal.totp, methods=["GET", "POST"]),
        Route("/account/totp/off", portal.totp_off, methods=["POST"]),
        Route("/account/keys", portal.keys, methods=["GET", "POST"]),
        Route("/k/{key_id:portal_id}", portal.key_link),
        Route("/k/{key_id:portal_id}/code", portal.key_code, methods=["POST"]),
        Route("/k/{key_id:portal_id}/key", portal.release),
        Route("/k/{key_id:portal_id}/data", portal.key_data),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: portal.http_error})
    app.add_middleware(
        SecurityHeaders,
        error_page=lambda: portal.error(
            Ctx(None, None), 500, "Something went wrong on our side. Try again in a moment."
        ),
    )
    return app


def browser_key(data: dict) -> tuple[str, str]:
    """The public key (base64 SPKI of a P-256 key) and the wrapped private key (JSON) a
    browser sent, checked: a key on the curve, a KDF we support at >= 600,000 iterations,
    sizes that fit what AES-GCM over a PKCS#8 P-256 key gives."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    spki = base64.b64decode(data["public_key"], validate=True)
    key = load_der_public_key(spki)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the public key must be ECDH P-256")
    wrapped = data["private_key"]
    if wrapped.get("kdf") != "pbkdf2-sha256" or not isinstance(wrapped.get("iterations"), int):
        raise ValueError("the private key must be wrapped with pbkdf2-sha256")
    if not 600_000 <= wrapped["iterations"] <= 10_000_000:
        raise ValueError("PBKDF2 iterations must be between 600,000 and 10,000,000")
    salt, iv = base64.b64decode(wrapped["salt"], validate=True), base64.b64decode(wrapped["iv"], validate=True)
    sealed = base64.b64decode(wrapped["sealed"], validate=True)
    if len(salt) < 16 or len(iv) != 12 or not 100 <= len(sealed) <= 400:
        raise ValueError("the wrapped private key has the wrong shape")
    clean = {k: wrapped[k] for k in ("kdf", "iterations", "salt", "iv", "sealed")}
    return base64.b64encode(spki).decode(), json.dumps(clean, sort_keys=True)


def _address(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    if not value or len(value) > 254 or value.count("@") != 1 or any(c.isspace() or not c.isprintable() for c in value):
        return None
    local, domain = value.split("@")
    return value if local and "." in domain else None


def _addresses(value) -> list[str]:
    if not isinstance(value, str):
        return []
    out = []
    for part in value.replace(";", ",").split(","):
        found = mail.addresses(part)
        out += list(found) if found else ([a] if (a := _address(part)) else [])
    return list(dict.fromkeys(out))


def _mask(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}{'•' * max(1, min(len(local) - 1, 6))}@{domain}"


def _next(session: Session) -> str:
    try:
        target = json.loads(session.pending or "{}").get("next") or "/inbox"
    except ValueError:
        target = "/inbox"
    return target if target.startswith("/") and not target.startswith("//") else "/inbox"


def _int(value, default: int) -> int:
    try:
        return max(0, min(int(value), 100_000))
    except (TypeError, ValueError):
        return default


def _prefixed(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower() + ":") else f"{prefix}: {subject}"


def _when(value: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _isotime(value: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds")


def _size(value: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if value < 1000 or unit == "MB":
            return f"{value:,} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return str(value)
