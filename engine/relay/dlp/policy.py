"""DLP policy evaluation: a config's policies compiled once, then judged per message.

`compile_policies(config, ip_groups, domain_groups)` walks every enabled policy → rule →
condition tree, gives each pattern and phrase an id, and builds ONE multi-pattern matcher
for all of them (hyperscan where it loads); classifiers (built-in and `dlp.classifiers`)
run on demand, once per text. `Policies.evaluate(extracted, facts)` then decides which
rules match, with the evidence redacted to its first and last characters (a classifier's
match also names the classifier and its confidence; a classifier condition counts only
matches at or above its `min_confidence`), and the action that follows: the strongest of
the matched rules' plans (block > quarantine > encrypt > permit). In `monitor` mode
matches are recorded and the action is always permit.

Content DLP could not fully read (`Extracted.unscanned`: an archive nested too deep, a
suspected bomb, a part it cannot decode) is judged by `dlp.unscannable`, as if by one more
rule: when at least one enabled rule applies to the message (by source and destination),
a built-in hit `dlp/unscannable` with that action joins the matched rules, so the strongest
action still wins, monitor mode still only records, and everything that reports rules
(the intake's quarantine reason and block notice, the decision log, `explain`) names it.
"""

from __future__ import annotations

import fnmatch
import pathlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.config.model import RelayConfig
from engine.config.model.dlp import (
    AllCondition,
    AnyCondition,
    AttachmentCondition,
    AttachmentCountCondition,
    ClassifierCondition,
    HeaderCondition,
    NotCondition,
    PatternCondition,
    PhrasesCondition,
    Rule,
    ScanLimits,
)
from engine.memo import Kept
from engine.policy.groups import DomainSet, IPSet, domain_of
from engine.relay.dlp.classifiers import (
    CANDIDATES,
    CHECKSUMS,
    CLASSIFIERS,
    Classifier,
    Match,
    at_least,
    make_classifier,
)
from engine.relay.dlp.extract import Extracted, Limits, PlainText
from engine.relay.dlp.matcher import Matcher

_ASKED_KEPT = 4096  # the most `Facts` whose applying rules and scopes are kept (Policies._asked)
ACTION_STRENGTH = {"permit": 0, "encrypt": 1, "quarantine": 2, "block": 3}
Path = tuple[str | int, ...]


class Facts(NamedTuple):
    """What policy rules may ask about a message besides its content (a tuple: made once
    per message, and a key of `Policies._asked`)."""

    sender: str
    recipients: tuple[str, ...]
    peer_ip: str
    direction: str


@dataclass(frozen=True)
class RuleHit:
    policy: str
    rule: str
    severity: str
    action_plan: str
    action: str
    notify: tuple[str, ...]
    owners: tuple[str, ...]
    evidence: tuple[str, ...]
    path: Path  # where the rule is written, for `explain`
    builtin: bool = False  # dlp.unscannable, not a policy's rule
    advanced_delivery: str | None = None  # the plan's override of encryption.advanced.delivery


UNSCANNABLE_PATH: Path = ("dlp", "unscannable")


def unscannable_hit(action: str) -> RuleHit:
    """The built-in rule for content DLP could not fully read (`dlp.unscannable`)."""
    return RuleHit("dlp", "unscannable", "high", "dlp.unscannable", action, (), (), (), UNSCANNABLE_PATH, True)


@dataclass(frozen=True)
class Findings:
    hits: tuple[RuleHit, ...]
    action: str  # what happens (permit in monitor mode)
    would: str  # what enforce mode would do
    mode: str
    problems: tuple[str, ...] = ()
    unscanned: tuple[str, ...] = ()  # the problems that left content unread

    @property
    def policies(self) -> tuple[str, ...]:
        """The policies whose rules matched (the built-in unscannable rule is none)."""
        return tuple(dict.fromkeys(h.policy for h in self.hits if not h.builtin))


@dataclass
class _Scan:
    """Per-message caches: matcher results and classifier results, per scope."""

    texts: dict[str, str]
    matcher: Matcher
    classifiers: dict[str, Classifier]
    custom: dict[str, tuple[str, Callable[[str], bool]]] = field(default_factory=dict)
    spans: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    found: dict[tuple[str, str], list] = field(default_factory=dict)
    quiet: dict[frozenset[str], bool] = field(default_factory=dict)

    def _spans(self, scope: str) -> dict[str, list[tuple[int, int]]]:
        if scope not in self.spans:
            self.spans[scope] = self.matcher.scan(self.texts[scope]) if self.texts[scope] else {}
        return self.spans[scope]

    def matches(self, entry_ids: tuple[str, ...], scope: str) -> list[str]:
        """What the matcher found in one scope for any of `entry_ids`, in their order."""
        spans = self._spans(scope)
        if not spans:  # nothing at all matched in this scope: the usual case
            return []
        text = self.texts[scope]
        return [text[s:e] for entry in entry_ids for s, e in spans.get(entry, ())]

    def silent(self, scopes: frozenset[str]) -> bool:
        """Whether the scan found nothing at all in `scopes`, whose text is ASCII (a built-in
        classifier without a candidate then finds nothing: `classified`). Asked once per
        group of rules (`Policies._groups`), answered once per set of scopes."""
        quiet = self.quiet.get(scopes)
        if quiet is None:
            quiet = self.quiet[scopes] = all(not self._spans(s) and self.texts[s].isascii() for s in scopes)
        return quiet

    def classified(self, name: str, scope: str, min_confidence: str = "low") -> list[Match]:
        """The classifier's matches in one scope at ``min_confidence`` or above (cached per
        scope, filtered per condition). A custom classifier's regex is in the matcher's
        database: its candidates come from the one scan of the scope, and only they are
        checked (the checksum), as a built-in's would be."""
        key = (name, scope)
        if key not in self.found:
            text = self.texts[scope]
            if name in self.custom:
                entry, valid = self.custom[name]
                spans = self._spans(scope).get(entry, [])
                self.found[key] = [Match(s, e, text[s:e], "high") for s, e in spans if valid(text[s:e])]
            elif not text or (name in CANDIDATES and text.isascii() and f"b.{name}" not in self._spans(scope)):
                self.found[key] = []  # not even a candidate (CANDIDATES): nothing for its Python to find
            else:
                self.found[key] = self.classifiers[name](text)
        found = self.found[key]
        if min_confidence == "low" or not found:
            return found
        return [m for m in found if at_least(m.confidence, min_confidence)]


class Policies:
    """A config's DLP policies, compiled. Immutable; safe to share across sessions."""

    def __init__(
        self,
        config: RelayConfig,
        ip_groups: dict[str, IPSet],
        domain_groups: dict[str, DomainSet],
        cache_dir: pathlib.Path | None = None,
    ) -> None:
        """``cache_dir``: where the compiled pattern database is kept for the next start."""
        dlp = config.dlp
        self.mode = dlp.mode
        self.unscannable = dlp.unscannable
        self.limits = scan_limits(dlp.limits)
        self._plans = {p.name: p for p in dlp.action_plans}
        self._ip_groups = ip_groups
        self._domain_groups = domain_groups
        self._classifiers = {
            **CLASSIFIERS,
            **{c.name: make_classifier(c.name, c.pattern, c.checksum) for c in dlp.classifiers},
        }
        # each enabled rule: its path, policy, owners, the rule, its `_filters` and `_needs_hits`
        self._rules: list[tuple[Path, str, tuple[str, ...], Rule, tuple, frozenset[str] | None]] = []
        self._ids: dict[int, tuple[str, ...]] = {}  # id(condition) -> its matcher entry ids
        # custom classifiers: their regexes join the matcher's database (entry "k.NAME")
        self._custom = {c.name: (f"k.{c.name}", CHECKSUMS[c.checksum]) for c in dlp.classifiers}
        entries: list[tuple[str, str, str]] = []
        for p, policy in enumerate(dlp.policies):
            if not policy.enabled:
                continue
            for r, rule in enumerate(policy.rules):
                if rule.enabled:
                    path = ("dlp", "policies", p, "rules", r)
                    needs = self._needs_hits(rule.conditions)
                    self._rules.append((path, policy.name, tuple(policy.owners), rule, _filters(rule), needs))
                    entries.extend(self._entries(rule.conditions))
        # the rules grouped by their filters and the scopes they need hits in, each group with
        # a rule whose filters stand for all and the indexes of its rules: a message's
        # evaluation asks each group once whether it applies and whether the scan was silent
        self._groups: dict[tuple, tuple[Rule, frozenset[str] | None, list[int]]] = {}
        for index, (_, _, _, rule, key, needs) in enumerate(self._rules):
            self._groups.setdefault((key, needs), (rule, needs, []))[2].append(index)
        self._asked_memo: Kept[Facts, tuple] = Kept(_ASKED_KEPT)  # `_asked`'s answers
        if self._rules:  # without rules nothing is scanned: no database to build
            entries += [(f"k.{c.name}", "regex", c.pattern) for c in dlp.classifiers]
            # the built-ins' candidates (classifiers.CANDIDATES): entry "b.NAME"
            entries += [(f"b.{name}", "regex", pattern) for name, pattern in CANDIDATES.items()]
        self._matcher = Matcher.compile(entries, cache_dir=cache_dir)

    @property
    def empty(self) -> bool:
        return not self._rules

    def _needs_hits(self, cond) -> frozenset[str] | None:
        """The scopes in which the scan must find something for `cond` to hold, or None when
        it may hold without (a `not`, a header, an attachment condition, a classifier whose
        Python runs without a candidate). Such a rule is skipped for a message whose scan
        found nothing in those scopes (`_Scan.silent`)."""
        if isinstance(cond, AllCondition | AnyCondition):
            scopes: set[str] = set()
            for sub in cond.all if isinstance(cond, AllCondition) else cond.any:
                needed = self._needs_hits(sub)
                if needed is None:
                    return None
                scopes |= needed
            return frozenset(scopes)
        if isinstance(cond, PatternCondition | PhrasesCondition):
            return frozenset(cond.scope)
        if isinstance(cond, ClassifierCondition) and (cond.classifier in CANDIDATES or cond.classifier in self._custom):
            return frozenset(cond.scope)
        return None

    def _entries(self, cond) -> Iterable[tuple[str, str, str]]:
        if isinstance(cond, AllCondition | AnyCondition):
            for sub in cond.all if isinstance(cond, AllCondition) else cond.any:
                yield from self._entries(sub)
        elif isinstance(cond, NotCondition):
            yield from self._entries(cond.not_)
        elif isinstance(cond, PatternCondition):
            key = f"c{len(self._ids)}"
            self._ids[id(cond)] = (key,)
            yield key, "regex", cond.pattern
        elif isinstance(cond, PhrasesCondition):
            key = f"c{len(self._ids)}"
            self._ids[id(cond)] = tuple(f"{key}.{k}" for k in range(len(cond.phrases)))
            for k, phrase in enumerate(cond.phrases):
                yield f"{key}.{k}", "phrase", phrase

    def evaluate(self, extracted: Extracted, facts: Facts) -> Findings:
        scan = _Scan(_texts(extracted), self._matcher, self._classifiers, self._custom)
        hits = []
        in_scope = False
        walk: list[int] = []
        for needs, indexes in self._applying(facts):
            in_scope = True
            if needs is None or not scan.silent(needs):  # else the scan found nothing they could hold on
                walk.extend(indexes)
        for index in sorted(walk):  # in the rules' order, as their hits are reported
            path, policy, owners, rule, _, _ = self._rules[index]
            evidence: list[str] = []
            if self._holds(rule.conditions, scan, extracted, evidence):
                plan = self._plans[rule.action_plan]
                hits.append(
                    RuleHit(
                        policy,
                        rule.name,
                        rule.severity,
                        plan.name,
                        plan.email,
                        tuple(plan.notify),
                        owners,
                        tuple(_shown(e) for e in evidence[:5]),
                        path,
                        advanced_delivery=plan.advanced_delivery,
                    )
                )
        if extracted.unscanned and in_scope and self.unscannable != "permit":
            hits.append(unscannable_hit(self.unscannable))
        would = max((h.action for h in hits), key=ACTION_STRENGTH.__getitem__, default="permit")
        action = would if self.mode == "enforce" else "permit"
        return Findings(tuple(hits), action, would, self.mode, tuple(extracted.problems), tuple(extracted.unscanned))

    def _applying(self, facts: Facts) -> tuple[tuple[frozenset[str] | None, list[int]], ...]:
        """The groups of rules that apply to the message: the scopes they need hits in, and
        their indexes. Groups with the same source and destination filters ask once."""
        return self._asked(facts)[0]

    def _asked(
        self, facts: Facts
    ) -> tuple[tuple[tuple[frozenset[str] | None, list[int]], ...], tuple[str, ...] | None]:
        """`_applying`, and the scopes whose silence decides `quick` (None: some rule that
        applies may hold without a hit), kept per `Facts`: a relay sees the same senders,
        peers and recipients again and again (`_ASKED_KEPT` of them at most)."""
        asked = self._asked_memo.get(facts)
        if asked is None:
            applies: dict[tuple, bool] = {}
            for (key, _), (rule, _, _) in self._groups.items():
                if key not in applies:
                    applies[key] = self._applies(rule, facts)
            applying = tuple((needs, indexes) for (key, _), (_, needs, indexes) in self._groups.items() if applies[key])
            needed = [needs for needs, _ in applying]
            scopes = None if None in needed else tuple(sorted(frozenset().union(*needed)))
            asked = self._asked_memo.keep(facts, (applying, scopes))
        return asked

    def quick(self, read: Extracted | PlainText, facts: Facts) -> Findings | None:
        """The verdict `evaluate` gives when one candidate pass decides it, else None: every
        rule that applies needs a hit (`_needs_hits`) in scopes whose text is ASCII and holds
        not even a candidate (`Matcher.quiet`, one pass over them all that stops at the
        first). No rule can hold then, and none is walked. Its time follows the texts'
        length, whatever they hold: no classifier's Python, no confirming regex, no header
        or `not` condition runs here. Content left unread is never decided here
        (`dlp.unscannable` may act on it). `read`: the message's extraction, or, for a
        message `extract.plain_ascii` read, its body as sent (ASCII bytes: its text)."""
        if read.unscanned:
            return None
        scopes = self._asked(facts)[1]
        if scopes is None:
            return None
        wanted = [text for scope in scopes for text in _pieces(read, scope)]
        if not all(text.isascii() for text in wanted if isinstance(text, str)) or not self._matcher.quiet(*wanted):
            return None
        return Findings((), "permit", "permit", self.mode, tuple(read.problems))

    def classified(self, extracted: Extracted, classifier: str, min_confidence: str = "medium") -> list[Match]:
        """What a `classifier` condition with `min_confidence` finds in the default scope
        (subject, body, attachments), through the texts and cache a rule uses: for the
        evaluation corpus and tools that score classifiers."""
        scan = _Scan(_texts(extracted), self._matcher, self._classifiers, self._custom)
        scopes = ("subject", "body", "attachments")
        return [m for scope in scopes for m in scan.classified(classifier, scope, min_confidence)]

    # -- rules ----------------------------------------------------------------------------

    def _applies(self, rule: Rule, facts: Facts) -> bool:
        source, dest = rule.source, rule.destination
        sender = facts.sender.lower()
        if source.senders and not any(fnmatch.fnmatchcase(sender, g.lower()) for g in source.senders):
            return False
        if source.ip_groups and not any(self._ip_groups[g].contains(facts.peer_ip) for g in source.ip_groups):
            return False
        if dest.direction != "any" and dest.direction != facts.direction:
            return False
        domains = [domain_of(r) for r in facts.recipients]
        if dest.domains and not any(fnmatch.fnmatchcase(d, g.lower()) for d in domains for g in dest.domains):
            return False
        if dest.domain_groups and not any(
            self._domain_groups[g].contains(d) for d in domains for g in dest.domain_groups
        ):
            return False
        return True

    def _holds(self, cond, scan: _Scan, extracted: Extracted, evidence: list[str]) -> bool:
        if isinstance(cond, AllCondition):
            return all(self._holds(c, scan, extracted, evidence) for c in cond.all)
        if isinstance(cond, AnyCondition):
            return any([self._holds(c, scan, extracted, evidence) for c in cond.any])  # evidence from each
        if isinstance(cond, NotCondition):
            return not self._holds(cond.not_, scan, extracted, [])
        if isinstance(cond, PatternCondition | PhrasesCondition):
            entries = self._ids[id(cond)]
            found = [m for scope in cond.scope for m in scan.matches(entries, scope)]
        elif isinstance(cond, ClassifierCondition):
            found = [
                (m.value, f"{cond.classifier}: {m.confidence}")
                for scope in cond.scope
                for m in scan.classified(cond.classifier, scope, cond.min_confidence)
            ]
        elif isinstance(cond, AttachmentCondition):
            found = [a.name for a in extracted.attachments if _attachment_matches(cond.attachment, a)]
            if found:
                evidence.extend(found)
            return bool(found)
        elif isinstance(cond, AttachmentCountCondition):
            return len(extracted.attachments) > cond.attachment_count.over
        elif isinstance(cond, HeaderCondition):
            import re

            name = cond.header.name.lower()
            pattern = re.compile(cond.header.pattern)
            found = [v for n, v in extracted.headers if n.lower() == name and pattern.search(v)]
            evidence.extend(found)
            return bool(found)
        else:  # pragma: no cover - the models admit nothing else
            return False
        if len(found) >= cond.min_matches:
            evidence.extend(found)
            return True
        return False


def _filters(rule: Rule) -> tuple:
    """What decides whether a rule applies to a message (its source and destination)."""
    source, dest = rule.source, rule.destination
    return (
        tuple(source.senders),
        tuple(source.ip_groups),
        dest.direction,
        tuple(dest.domains),
        tuple(dest.domain_groups),
    )


def scan_limits(limits: ScanLimits) -> Limits:
    """The config's `dlp.limits` as extract's `Limits`."""
    return Limits(
        max_depth=limits.archive_depth,
        max_total_bytes=int(limits.expanded_size),
        max_ratio=limits.compression_ratio,
        max_entries=limits.archive_entries,
        max_mime_depth=limits.mime_depth,
        document_bytes=int(limits.document_size),
        document_seconds=float(limits.document_time),
        message_document_seconds=float(limits.message_document_time),
    )


def _attachment_matches(match, attachment) -> bool:
    if match.name and not fnmatch.fnmatch((attachment.name or "").lower(), match.name.lower()):
        return False
    if match.type and attachment.true_type not in match.type:
        return False
    if match.size_over is not None and attachment.size <= match.size_over:
        return False
    return True


def _texts(extracted: Extracted) -> dict[str, str]:
    """The message's text per scope (subject, body, attachments, headers), each joined when
    first asked for: the quick path reads the scopes its rules need, not the headers."""
    return _Texts(extracted)


class _Texts(dict):
    def __init__(self, extracted: Extracted) -> None:
        super().__init__()
        self.extracted = extracted

    def __missing__(self, scope: str) -> str:
        text = self[scope] = "\n".join(_pieces(self.extracted, scope))
        return text


def _pieces(extracted: Extracted | PlainText, scope: str) -> list[str | memoryview]:
    """The texts that make up one scope, in the message's order (a plain message's body as
    the ASCII bytes it was sent as)."""
    if scope == "headers":
        return [f"{n}: {v}" for n, v in extracted.headers]
    if isinstance(extracted, PlainText) and scope in ("subject", "body", "attachments"):
        return [extracted.subject] if scope == "subject" else [extracted.body] if scope == "body" else []
    if scope == "subject":
        return [p.text for p in extracted.texts if p.origin == "subject"]
    if scope == "attachments":
        return [p.text for p in extracted.texts if p.origin.startswith("attachment:")]
    if scope == "body":
        return [p.text for p in extracted.texts if p.origin != "subject" and not p.origin.startswith("attachment:")]
    raise KeyError(scope)


def _shown(evidence: str | tuple[str, str]) -> str:
    """Evidence redacted; a classifier's match says which classifier and how confident."""
    if isinstance(evidence, tuple):
        return f"{redact(evidence[0])} ({evidence[1]})"
    return redact(evidence)


def redact(text: str) -> str:
    """Evidence for logs and reports: first and last character, the rest masked."""
    text = " ".join(text.split())
    if len(text) <= 2:
        return "*" * len(text)
    return f"{text[0]}{'*' * min(len(text) - 2, 20)}{text[-1]}"
