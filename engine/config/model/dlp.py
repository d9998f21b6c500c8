"""`dlp`: policies whose rules decide which mail is encrypted, blocked or quarantined."""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, model_validator

from engine.config.model.base import F, Model, Name, Tag, by_key
from engine.config.units import DurationField, SizeField

Scope = Literal["subject", "body", "attachments", "headers"]
DEFAULT_SCOPE: list[Scope] = ["subject", "body", "attachments"]
BUILTIN_CLASSIFIERS = ("credit_card", "us_ssn", "iban", "email_address")
# what DLP's magic-byte sniffing (engine/relay/dlp/filetypes.py) can say a file is
TRUE_TYPES = (
    "pdf",
    "zip",
    "docx",
    "xlsx",
    "pptx",
    "odt",
    "ods",
    "odp",
    "png",
    "jpeg",
    "gif",
    "gzip",
    "bzip2",
    "xz",
    "tar",
    "7z",
    "rar",
    "exe",
    "elf",
    "rtf",
    "ole2",
    "text",
    "unknown",
)
Direction = Literal["inbound", "outbound", "internal", "any"]


class PatternCondition(Model):
    pattern: str = F(..., "Regular expression (Python/PCRE syntax)", r"\bACCT-\d{8}\b")
    min_matches: int = F(1, "How many matches trigger the condition", 1, ge=1)
    scope: list[Scope] = F(DEFAULT_SCOPE, "Where to look", ["subject", "body"])


class PhrasesCondition(Model):
    phrases: list[Annotated[str, Field(min_length=1)]] = F(
        ...,
        "Phrases, matched case-insensitively on word boundaries",
        ["account statement", "card number"],
        min_length=1,
    )
    min_matches: int = F(1, "How many matches trigger the condition", 1, ge=1)
    scope: list[Scope] = F(DEFAULT_SCOPE, "Where to look", ["body"])


Confidence = Literal["low", "medium", "high"]
CONFIDENCE_ORDER: tuple[Confidence, ...] = ("low", "medium", "high")


class ClassifierCondition(Model):
    classifier: Name = F(
        ...,
        "A built-in classifier (credit_card, us_ssn, iban, email_address) or one from dlp.classifiers",
        "credit_card",
    )
    min_confidence: Confidence = F(
        "medium",
        "Count only matches this confident or more: low | medium | high. A built-in match is medium from "
        "its format alone (low when the format is weak: a bare nine-digit SSN, a card cut out of a longer "
        "run), one level higher with a supporting keyword nearby; custom classifiers' matches are high. "
        "Lowering it matches more",
        "medium",
        "high",
    )
    min_matches: int = F(1, "How many matches trigger the condition", 1, ge=1)
    scope: list[Scope] = F(DEFAULT_SCOPE, "Where to look", ["body", "attachments"])


class AttachmentMatch(Model):
    name: str | None = F(None, "File name glob", "*.xlsx")
    type: list[str] | None = F(
        None,
        "True file types, from the content's magic bytes (not the claimed type). An office document "
        "is its own type (docx, xlsx, pptx, odt, ods, odp), not `zip`: list it beside `zip` to match it too",
        ["pdf", "zip", "exe"],
    )
    size_over: SizeField | None = F(None, "Only attachments larger than this", "5MB")


class AttachmentCondition(Model):
    attachment: AttachmentMatch = F(
        ..., "At least one attachment with these properties", {"name": "*.xlsx", "size_over": "5MB"}
    )


class CountMatch(Model):
    over: int = F(..., "More than this many attachments", 10, ge=0)


class AttachmentCountCondition(Model):
    attachment_count: CountMatch = F(..., "Number of attachments", {"over": 10})


class HeaderMatch(Model):
    name: str = F(..., "Header name", "X-Classification")
    pattern: str = F(..., "Regular expression the header's value must match", "(?i)confidential")


class HeaderCondition(Model):
    header: HeaderMatch = F(
        ...,
        "A header whose value matches",
        {"name": "X-Classification", "pattern": "(?i)confidential"},
    )


class AllCondition(Model):
    all: list[Condition] = F(..., "Every condition must hold", [{"classifier": "credit_card"}], min_length=1)


class AnyCondition(Model):
    any: list[Condition] = F(..., "At least one condition must hold", [{"classifier": "iban"}], min_length=1)


class NotCondition(Model):
    not_: Condition = F(..., "The condition must not hold", {"phrases": ["public"]}, alias="not")


_KINDS = (
    "all",
    "any",
    "not",
    "pattern",
    "phrases",
    "classifier",
    "attachment",
    "attachment_count",
    "header",
)
Condition = Annotated[
    Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")]
    | Annotated[PatternCondition, Tag("pattern")]
    | Annotated[PhrasesCondition, Tag("phrases")]
    | Annotated[ClassifierCondition, Tag("classifier")]
    | Annotated[AttachmentCondition, Tag("attachment")]
    | Annotated[AttachmentCountCondition, Tag("attachment_count")]
    | Annotated[HeaderCondition, Tag("header")],
    by_key(*_KINDS),
]
CONDITION_KINDS = _KINDS


class CustomClassifier(Model):
    name: Name = F(..., "Classifier name, used as `classifier: NAME` in conditions", "employee_id")
    pattern: str = F(..., "Regular expression of a candidate match", r"\bEMP-\d{6}\b")
    checksum: Literal["none", "luhn", "mod97"] = F(
        "none", "Checksum the digits of a candidate must pass", "none", "luhn"
    )
    description: str = F("", "What it finds", "Employee numbers")


class ActionPlan(Model):
    name: Name = F(..., "Action plan name", "encrypt-sensitive")
    description: str = F("", "What the plan is for", "Encrypt mail with card numbers")
    email: Literal["encrypt", "block", "quarantine", "permit"] = F(
        ...,
        "What happens to the message: encrypt | block (NDR to the sender) | quarantine | permit",
        "encrypt",
    )
    notify: list[str] = F(
        [],
        "Who gets a short report: `policy_owners` or addresses",
        ["policy_owners", "dlp@example.com"],
    )
    advanced_delivery: Literal["offline", "revocable"] | None = F(
        None,
        "With `email: encrypt` and the advanced method: `revocable` or `offline` for mail this plan "
        "encrypts, instead of `encryption.advanced.delivery` (when several plans match, revocable wins)",
        "revocable",
    )


class Source(Model):
    senders: list[str] = F([], "Sender address globs (empty: any sender)", ["*@example.com"])
    ip_groups: list[Name] = F([], "IP groups the message must come from (empty: any)", ["internal_servers"])


class Destination(Model):
    direction: Direction = F("outbound", "Mail direction the rule applies to", "outbound")
    domains: list[str] = F([], "Recipient domain globs (empty: any)", ["*.bank.example"])
    domain_groups: list[Name] = F([], "Recipient domain groups (empty: any)", ["partners"])


class Rule(Model):
    name: Name = F(..., "Rule name", "cards")
    description: str = F("", "What the rule catches", "Card numbers")
    enabled: bool = F(True, "Disabled rules are skipped", True)
    conditions: Condition = F(..., "When the rule matches", {"any": [{"classifier": "credit_card"}]})
    severity: Literal["low", "medium", "high", "critical"] = F("medium", "Severity recorded with the match", "high")
    action_plan: Name = F(..., "Name of an action plan in dlp.action_plans", "encrypt-sensitive")
    source: Source = F(Source(), "Whose mail the rule applies to", {"senders": ["*@example.com"]})
    destination: Destination = F(Destination(), "Where the mail goes", {"direction": "outbound"})


class Policy(Model):
    name: Name = F(..., "Policy name", "payment-cards")
    description: str = F("", "What the policy protects", "Card numbers leaving the company must be encrypted")
    owners: list[str] = F([], "Addresses of the owners (they receive notifications)", ["security@example.com"])
    enabled: bool = F(True, "Disabled policies are skipped", True)
    rules: list[Rule] = F(
        ...,
        "The policy's rules",
        [
            {
                "name": "cards",
                "conditions": {"classifier": "credit_card"},
                "action_plan": "encrypt-sensitive",
            }
        ],
        min_length=1,
    )


class ScanLimits(Model):
    """What reading one message may cost DLP. Content past a limit is not read and the
    message counts as unscannable (`dlp.unscannable` acts on it): lower limits cost less
    CPU and memory and leave more mail unscannable, higher ones read more of hostile mail."""

    archive_depth: int = F(3, "Archives and attached messages nested deeper than this are not opened", 3, ge=1, le=10)
    archive_entries: int = F(
        1000, "Archive members read per message, over all archives and documents", 1000, ge=1, le=100_000
    )
    expanded_size: SizeField = F(
        "50MiB",
        "Bytes all archives and documents of one message may inflate to, together",
        "50MiB",
        validate_default=True,
    )
    compression_ratio: int = F(
        100,
        "Largest inflated:packed ratio of one archive member larger than 1 MiB (a bomb beyond)",
        100,
        ge=2,
        le=100_000,
    )
    mime_depth: int = F(20, "MIME parts nested deeper than this are read as text, not parsed", 20, ge=1, le=100)
    document_size: SizeField = F(
        "20MiB", "Largest PDF, Office, OpenDocument or RTF file whose text is read", "20MiB", validate_default=True
    )
    document_time: DurationField = F("5s", "Time one document's text may take to read", "5s", validate_default=True)
    message_document_time: DurationField = F(
        "20s", "Time all documents of one message may take to read, together", "20s", validate_default=True
    )


class DLP(Model):
    """Data loss protection: what in a message triggers which action."""

    mode: Literal["enforce", "monitor"] = F(
        "enforce", "`enforce` acts on matches; `monitor` only records them", "enforce"
    )
    classifiers: list[CustomClassifier] = F(
        [],
        "Custom classifiers beside the built-in ones",
        [{"name": "employee_id", "pattern": r"\bEMP-\d{6}\b"}],
    )
    action_plans: list[ActionPlan] = F(
        [], "Named actions that rules refer to", [{"name": "encrypt-sensitive", "email": "encrypt"}]
    )
    policies: list[Policy] = F([], "DLP policies", [{"name": "payment-cards", "rules": []}])
    unscannable: Literal["encrypt", "quarantine", "block", "permit"] = F(
        "encrypt",
        "What happens to outbound mail whose content DLP could not fully read (an archive nested too deep, "
        "too many members, a suspected bomb, an archive it cannot open, a part it cannot decode), when a rule "
        "applies to it: encrypt (it flows, never in clear) | quarantine | block | permit. Combined with the rules' "
        "actions (the strongest wins); in monitor mode only recorded",
        "encrypt",
        "quarantine",
    )
    limits: ScanLimits = F(ScanLimits(), "What reading one message may cost DLP", {"document_time": "10s"})

    @model_validator(mode="wrap")
    @classmethod
    def _once_per_content(cls, data: Any, handler: ModelWrapValidatorHandler[DLP]) -> DLP:
        """The same data gives the same (frozen) model, validated once: `_VALIDATED`."""
        if not isinstance(data, dict):
            return handler(data)
        try:
            key = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # not plain data: validate it as it is
            return handler(data)
        with _VALIDATED_LOCK:
            found = _VALIDATED.get(key)
            if found is not None:
                _VALIDATED.move_to_end(key)
                return found
        made = handler(data)  # raises on invalid data: nothing remembered
        with _VALIDATED_LOCK:
            _VALIDATED[key] = made
            while len(_VALIDATED) > DLP_KEPT:
                _VALIDATED.popitem(last=False)
        return made


# The DLP section is most of a large config (500 rules: 95% of its 250 KB) and, in most
# changes, the part that did not change: a config applied, planned or reloaded again with
# the same `dlp` is not validated again (7 ms of 8 for 500 rules). The key is the data's
# pickle (1 ms): exact in types and values (1, 1.0 and True differ), so equal keys mean
# equal data; data that pickles differently is only validated again.
DLP_KEPT = 4
_VALIDATED: OrderedDict[bytes, DLP] = OrderedDict()
_VALIDATED_LOCK = threading.Lock()  # configs are validated in the control and watcher threads


for _model in (AllCondition, AnyCondition, NotCondition):
    _model.model_rebuild()
