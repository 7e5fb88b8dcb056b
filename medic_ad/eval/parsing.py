"""Answer parsing: free text → yes/no, option letter, change label, normalised VQA answer.

The paper scores zero-shot detection from the *text* answer ("binary answer parsed from text"), so
the parser decides what counts. Rules, in order:

* Yes/No (:func:`parse_yes_no`): a leading yes/no word ("Yes.", "No, ...", "**Yes**") decides;
  then a bare verdict word ("Normal.", "Abnormal", "Unremarkable"); then the first clause that
  holds a cue, negative cues checked before positive ones inside a clause ("There is no lesion"
  is negative although it contains "lesion"). Concessive clauses ("Although the ventricles are
  normal, ...") are skipped. Hedges that refuse to answer ("cannot determine", "unclear") give
  ``None``: unparseable, counted wrong and reported by the metrics.
* Option letters (:func:`parse_choice`): "C", "C: Worsened", "(B)", "B.", "Answer: C",
  "The answer is (A)", "Option B" — only letters that are options of the question. A leading
  article ("A small effusion ...") is not a letter. Without a letter, the option *text* or a
  change word ("worse", "progressed", "resolved", "unchanged", "stable") names the option.
* VQA (:func:`normalize_answer`, :func:`token_recall`): lower case, punctuation and articles
  removed, whitespace collapsed; closed questions compare normalised strings (yes/no answers by
  :func:`parse_yes_no`), open questions score the share of reference tokens found in the answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

__all__ = [
    "change_from_text",
    "normalize_answer",
    "parse_change",
    "parse_choice",
    "parse_yes_no",
    "token_recall",
    "yes_no_label",
]

CHANGES = ("worsened", "improved", "no change")

_FINDING = (
    r"(?:abnormalit(?:y|ies)|abnormal\w*|lesions?|tumou?rs?|masse?s?|neoplasms?|h(?:a)?emorrhages?|bleed(?:ing|s)?|"
    r"hematomas?|haematomas?|infarcts?|infarctions?|strokes?|fractures?|nodules?|opacit(?:y|ies)|effusions?|"
    r"consolidations?|pneumonia|pneumothorax|edema|oedema|infiltrates?|cysts?|metastas[ie]s|glioma|meningioma|"
    r"anomal(?:y|ies)|pathology|pathologies|disease|findings? of concern|signs? of \w+|covid|infection)"
)

# Negative cues: checked before positive ones inside a clause.
_NEGATIVE = [re.compile(p) for p in (
    r"\bno (?:\w+ ){0,3}?" + _FINDING,
    r"\bno evidence\b",
    r"\bno (?:sign|signs|indication|indications|suggestion)\b",
    r"\bnothing (?:abnormal|suspicious|of note|remarkable)\b",
    r"\b(?:is|are|appears?|appear to be|looks?|seems?|seem to be|remains?)\s+(?:\w+\s+)?"
    r"(?:normal|unremarkable|healthy|clear)\b",
    r"\bwithin normal limits\b",
    r"\bunremarkable\b",
    r"\bnegative (?:for|study|scan|exam)\b",
    r"\b(?:there is|there are|there's|i see|i find|we see) (?:no|nothing)\b",
    r"\b(?:not|n't|cannot be|can't be) (?:\w+ )?(?:seen|identified|detected|visible|present|noted|observed|found|"
    r"demonstrated|appreciated|abnormal)\b",
    r"\b(?:does|do|did)(?: not|n't) (?:show|demonstrate|reveal|contain|have|display|appear|see|find|notice|"
    r"identify|detect|observe)\b",
    r"\b(?:cannot|can't|can not|could not|couldn't) (?:see|find|identify|detect) (?:any|an?)\b",
    r"\b(?:absence|absent|free) of\b",
    r"\bwithout (?:any |evidence |signs? )?(?:of )?" + _FINDING,
    r"\bnormal (?:\w+ ){0,2}?(?:study|scan|image|images|exam|examination|findings?|appearance|ct|mri|mr|x-?ray|"
    r"radiograph|brain|chest|head|lungs?|anatomy|structures?|parenchyma|variant|limits)\b",
    r"^normal\b",
    r"\bhealthy\b",
)]

_POSITIVE = [re.compile(p) for p in (
    r"\b(?:there is|there are|there's|there appears? to be|there seems? to be|there may be|there might be)\b",
    r"\b(?:shows?|showing|demonstrates?|reveals?|indicates?|suggests?|suggestive of|consistent with|compatible with|"
    r"evidence of|presence of|signs? of|concerning for|suspicious for|cannot rule out|can't rule out|"
    r"cannot exclude|positive for)\b",
    r"\b(?:is|are|appears?|looks?|seems?)\s+(?:\w+\s+)?abnormal\b",
    r"^abnormal\b",
    r"\b" + _FINDING + r"\b",
)]

# Refusals and hedges that give no verdict.
_UNDECIDED = re.compile(
    r"\b(?:cannot|can't|can not|unable to|not able to|impossible to) (?:\w+ )?(?:determine|tell|say|assess|"
    r"evaluate|answer|be determined|decide|comment)\b|\b(?:unclear|uncertain|indeterminate|not sure|unsure|"
    r"i don't know|i do not know|hard to (?:say|tell))\b|^(?:maybe|possibly|perhaps)\.?$"
)
_CONCESSIVE = re.compile(r"^(?:although|though|while|whilst|despite|even though|apart from|except for|besides)\b")
_LEAD = re.compile(r"^[\s\"'`*_#>\-\[\(]*")


def _clean(text: str | None) -> str:
    """Lower-case ``text`` without markdown, leading quote/bullet marks or repeated spaces ("" for None)."""
    if text is None:
        return ""
    t = text.strip().lower().replace("\u2019", "'")
    t = re.sub(r"[*_`#]+", "", t)
    t = _LEAD.sub("", t)
    return re.sub(r"\s+", " ", t).strip()


def parse_yes_no(text: str | None) -> bool | None:
    """True (abnormal / yes), False (normal / no) or None (unparseable) for a free-text answer."""
    t = _clean(text)
    if not t:
        return None
    t = re.sub(r"^(?:answer|final answer|response|assistant)\s*[:\-]\s*", "", t)
    lead = re.match(r"^(yes|yeah|yep|yup|y|true|positive|present|no|nope|n|false|negative|absent)\b(?![-'])", t)
    if lead:
        word = lead.group(1)
        if word in ("y", "n") and len(t) > 2:
            pass  # a lone "y"/"n" only counts as the whole answer
        else:
            return word in ("yes", "yeah", "yep", "yup", "y", "true", "positive", "present")
    if re.match(r"^(?:none|nothing)(?: (?:seen|detected|identified|found|noted|visible|abnormal))?\W*$", t):
        return False
    if _UNDECIDED.search(t):
        return None
    for clause in re.split(r"[.;,:!?\n]+|\bbut\b|\bhowever\b", t):
        clause = clause.strip()
        if not clause or _CONCESSIVE.match(clause):
            continue
        if any(p.search(clause) for p in _NEGATIVE):
            return False
        if any(p.search(clause) for p in _POSITIVE):
            return True
    return None


def yes_no_label(text: str | None) -> str | None:
    """``"abnormal"`` / ``"normal"`` / None: :func:`parse_yes_no` as a detection label."""
    v = parse_yes_no(text)
    return None if v is None else ("abnormal" if v else "normal")


_NO_CHANGE_WORDS = re.compile(
    r"\bno (?:significant |interval |appreciable |substantial |major |obvious |definite |real )?"
    r"(?:change|difference)s?\b|"
    r"\bunchanged\b|\bstable\b|\bsimilar\b|\bthe same\b|\bremains? (?:the same|unchanged|similar|stable)\b|"
    r"\bpersist\w*\b|\bneither (?:improved|worsened|better|worse)\b|\bnot (?:significantly )?changed\b"
)
_IMPROVED_WORDS = re.compile(
    r"\bimprov\w*|\bdecreas\w*|\bresol\w*|\breduc\w*|\bsmaller\b|\bless\b|\bbetter\b|\bregress\w*|\bclear(?:ed|ing)\b|"
    r"\bshrunk\b|\bshrink\w*|\bdiminish\w*|\bsubsid\w*"
)
_WORSENED_WORDS = re.compile(
    r"\bwors\w*|\bincreas\w*|\bprogress\w*|\blarger\b|\benlarg\w*|\bmore\b|\bnew\b|\bdeteriorat\w*|\bgr[eo]w\w*|"
    r"\bexpand\w*|\bspread\w*|\badvanc\w*|\bexacerbat\w*"
)
_NEGATED_CHANGE = re.compile(r"\b(?:not|no longer|hasn't|has not|didn't|did not|isn't|is not)\s+(?:\w+\s+)?"
                             r"(?:wors\w*|improv\w*|increas\w*|decreas\w*|progress\w*)")


def change_from_text(text: str | None) -> str | None:
    """``worsened`` / ``improved`` / ``no change`` named by a free-text answer or an option text."""
    t = _clean(text)
    if not t:
        return None
    if _NO_CHANGE_WORDS.search(t):
        return "no change"
    if _NEGATED_CHANGE.search(t):
        return None  # "has not worsened" does not say whether it improved or stayed
    found = [c for c, p in (("worsened", _WORSENED_WORDS), ("improved", _IMPROVED_WORDS)) if p.search(t)]
    if len(found) == 1:
        return found[0]
    if len(found) == 2:  # both words: the one named first is the verdict ("worse, with more effusion" etc.)
        first = {c: p.search(t).start() for c, p in (("worsened", _WORSENED_WORDS), ("improved", _IMPROVED_WORDS))}
        return min(first, key=first.get)
    return None


def parse_choice(text: str | None, options: Mapping[str, str]) -> str | None:
    """The option letter an answer chose, or None.

    ``options`` maps letters to option texts (``{"A": "No significant change", ...}``).
    """
    if text is None or not options:
        return None
    letters = {k.strip().upper(): k for k in options}
    raw = text.strip()
    stripped = re.sub(r"^[\s\"'`*_#>]+", "", raw)
    stripped = re.sub(r"^(?:answer|final answer|the answer is|the correct answer is|correct answer|option|choice)"
                      r"\s*(?:is\s*)?[:\-]?\s*", "", stripped, flags=re.IGNORECASE)
    # A letter at the start: "C", "C: Worsened", "(B)", "B.", "B)", "[A]"; a bare lowercase letter too.
    m = re.match(r"^[\(\[]?([A-Za-z])[\)\]]?(?=$|[\s.:)\],;\-]|\*)", stripped)
    if m:
        letter = m.group(1).upper()
        rest = stripped[m.end():].lstrip(")]*")
        is_letter = (
            m.group(0).startswith(("(", "["))
            or not rest.strip()
            or re.match(r"^\s*[.:)\],;\-]", rest)
            or (m.group(1).isupper() and _starts_with_option(rest, options))
        )
        if is_letter and letter in letters:
            return letters[letter]
    m = re.search(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[\(\[]?([A-Z])[\)\]]?(?![A-Za-z])", raw, re.IGNORECASE)
    if m and m.group(1).upper() in letters:
        return letters[m.group(1).upper()]
    # The option text itself, or the change it names ("has not worsened" names neither).
    cleaned = _clean(raw)
    if _NEGATED_CHANGE.search(cleaned) and not _NO_CHANGE_WORDS.search(cleaned):
        return None
    norm = normalize_answer(raw)
    hits = [k for k, v in options.items() if normalize_answer(v) and re.search(
        r"(?:^|\s)" + re.escape(normalize_answer(v)) + r"(?:$|\s)", norm)]
    if len(hits) == 1:
        return hits[0]
    change = change_from_text(raw)
    if change is not None:
        matching = [k for k, v in options.items() if change_from_text(v) == change]
        if len(matching) == 1:
            return matching[0]
    return None


def _starts_with_option(rest: str, options: Mapping[str, str]) -> bool:
    r = normalize_answer(rest)
    return any(r.startswith(normalize_answer(v)) for v in options.values() if normalize_answer(v))


def parse_change(text: str | None, options: Mapping[str, str] | None = None) -> str | None:
    """The change label an answer states: via its option letter when ``options`` are given."""
    if options:
        letter = parse_choice(text, options)
        return None if letter is None else change_from_text(options[letter])
    return change_from_text(text)


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile("[" + re.escape(string.punctuation.replace("-", "")) + "]")


def normalize_answer(text: str | None) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed ("The Liver." → "liver")."""
    if text is None:
        return ""
    t = text.lower().replace("\u2019", "'")
    t = _PUNCT.sub(" ", t)
    t = t.replace("-", " ")
    t = _ARTICLES.sub(" ", t)
    return re.sub(r"\s+", " ", t).strip()


def token_recall(prediction: str | None, reference: str | None) -> float:
    """Share of the reference's (normalised) tokens that occur in the prediction; 0 for an empty answer.

    An empty reference scores 1 when the prediction is empty too, else 0.
    """
    ref = normalize_answer(reference).split()
    pred = set(normalize_answer(prediction).split())
    if not ref:
        return 1.0 if not pred else 0.0
    return sum(1 for t in ref if t in pred) / len(ref)
