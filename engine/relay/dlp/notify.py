"""Messages the relay writes itself for DLP: the owners' report and the block notice."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from engine.relay.dlp.policy import Findings


def owners_report(
    fqdn: str, to: list[str], verdict: Findings, *, sender: str, recipients, subject: str, ref: str
) -> bytes:
    """A short report for policy owners: what matched, what was done, about which message."""
    msg = EmailMessage()
    msg["From"] = f"sealrelay DLP <postmaster@{fqdn}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[DLP] {', '.join(verdict.policies)}: {verdict.would}" + (
        " (monitor)" if verdict.mode == "monitor" else ""
    )
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain=fqdn)
    msg["Auto-Submitted"] = "auto-generated"
    lines = [
        f"A message matched DLP policy rules on {fqdn}.",
        "",
        f"  sender:     {sender or '<>'}",
        f"  recipients: {', '.join(recipients)}",
        f"  subject:    {subject}",
        f"  reference:  {ref}",
        f"  mode:       {verdict.mode}",
        f"  action:     {verdict.action}"
        + (f" (enforce would: {verdict.would})" if verdict.action != verdict.would else ""),
        "",
    ]
    for hit in verdict.hits:
        lines.append(
            f"- policy {hit.policy}, rule {hit.rule}: severity {hit.severity}, plan {hit.action_plan} ({hit.action})"
        )
        if hit.evidence:
            lines.append(f"  evidence (redacted): {', '.join(hit.evidence)}")
    if verdict.unscanned:
        lines += ["", "Not fully scanned (dlp.unscannable):", *(f"- {problem}" for problem in verdict.unscanned)]
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def notify_targets(verdict: Findings) -> list[str]:
    """Who is told: each matched plan's `notify` list, `policy_owners` expanded."""
    targets: list[str] = []
    for hit in verdict.hits:
        for target in hit.notify:
            targets.extend(hit.owners if target == "policy_owners" else [target])
    return list(dict.fromkeys(t for t in targets if t))
