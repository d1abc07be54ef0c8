"""Behavioural tests of a sentiment model in the manner of CheckList (Ribeiro et al., ACL 2020).

Hand-written sentences, each testing one capability: a label a reader would give without hesitation
(``LabelCase``), an ordering of how positive two sentences are (``OrderCase``), or a label that must
not change when nothing that matters changes (``SameCase``). The cases live here, as code, so that
editing them changes the export key and the build scores them again.

Any scorer can be checked: it maps texts to ``Prediction``s (a label and a positivity, higher is more
positive: P(positive) - P(negative) for the model, the compound score for VADER).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from models.sentiment_data import LABELS

# "not negative" accepts neutral or positive (CheckList's rule for negated negatives), likewise "not positive".
Expected = str  # one of LABELS, "not negative" or "not positive"


@dataclass(frozen=True)
class Prediction:
    label: str
    positivity: float


@dataclass(frozen=True)
class LabelCase:
    capability: str
    text: str
    expected: Expected

    def texts(self) -> tuple[str, ...]:
        return (self.text,)

    def passes(self, predictions: Sequence[Prediction]) -> bool:
        label = predictions[0].label
        if self.expected.startswith("not "):
            return label != self.expected.removeprefix("not ")
        return label == self.expected

    def describe(self, predictions: Sequence[Prediction]) -> str:
        return f"{self.text!r}: expected {self.expected}, got {predictions[0].label}"


@dataclass(frozen=True)
class OrderCase:
    capability: str
    lower: str  # the less positive (more negative) sentence
    higher: str

    def texts(self) -> tuple[str, ...]:
        return (self.lower, self.higher)

    def passes(self, predictions: Sequence[Prediction]) -> bool:
        return predictions[1].positivity > predictions[0].positivity

    def describe(self, predictions: Sequence[Prediction]) -> str:
        low, high = predictions
        return f"{self.higher!r} ({high.positivity:+.3f}) should be more positive than {self.lower!r} ({low.positivity:+.3f})"


@dataclass(frozen=True)
class SameCase:
    capability: str
    text: str
    variant: str  # the same judgement with a name, place, typo or punctuation changed

    def texts(self) -> tuple[str, ...]:
        return (self.text, self.variant)

    def passes(self, predictions: Sequence[Prediction]) -> bool:
        return predictions[0].label == predictions[1].label

    def describe(self, predictions: Sequence[Prediction]) -> str:
        return f"{self.text!r} is {predictions[0].label} but {self.variant!r} is {predictions[1].label}"


Case = Union[LabelCase, OrderCase, SameCase]

CASES: tuple[Case, ...] = (
    # Vocabulary: plain sentiment words in a neutral frame.
    LabelCase("vocabulary", "The food was delicious.", "positive"),
    LabelCase("vocabulary", "This is the worst phone I have ever owned.", "negative"),
    LabelCase("vocabulary", "The staff were rude and unhelpful.", "negative"),
    LabelCase("vocabulary", "What a wonderful surprise!", "positive"),
    LabelCase("vocabulary", "The hotel room was filthy.", "negative"),
    LabelCase("vocabulary", "I love this song.", "positive"),
    # Neutral: statements of fact with no opinion in them.
    LabelCase("neutral", "The meeting is at noon.", "neutral"),
    LabelCase("neutral", "The package arrived on Tuesday.", "neutral"),
    LabelCase("neutral", "The book has three hundred pages.", "neutral"),
    LabelCase("neutral", "She lives in Toronto with her sister.", "neutral"),
    # Negation: of a negative word (not negative), of a positive word (negative).
    LabelCase("negation", "The movie was not bad at all.", "not negative"),
    LabelCase("negation", "I don't hate it.", "not negative"),
    LabelCase("negation", "It was never boring.", "not negative"),
    LabelCase("negation", "The ending wasn't disappointing.", "not negative"),
    LabelCase("negation", "No complaints, everything worked.", "positive"),
    LabelCase("negation", "The service was not good.", "negative"),
    LabelCase("negation", "I would not recommend this hotel.", "negative"),
    LabelCase("negation", "This is not a good phone.", "negative"),
    LabelCase("negation", "I can't say I enjoyed it.", "negative"),
    LabelCase("negation", "The food was not great and the service was not friendly.", "negative"),
    # Contrast: the clause after "but" carries the verdict.
    LabelCase("contrast", "I wanted to love it, but it was dull.", "negative"),
    LabelCase("contrast", "The start was slow, but the ending was brilliant.", "positive"),
    LabelCase("contrast", "The actors are famous, but the film is a mess.", "negative"),
    LabelCase("contrast", "It looks cheap, but it works perfectly.", "positive"),
    LabelCase("contrast", "The idea was great, but the execution was terrible.", "negative"),
    LabelCase("contrast", "I expected to hate it, but I actually loved it.", "positive"),
    # Change over time: the present judgement wins.
    LabelCase("temporal", "I used to love this place, but now it is awful.", "negative"),
    LabelCase("temporal", "At first I disliked it, but now I use it every day and love it.", "positive"),
    LabelCase("temporal", "It was great for a week, then it broke.", "negative"),
    # Intensity: a stronger word, an intensifier or a downtoner moves the score the right way.
    OrderCase("intensity", "The hotel was good.", "The hotel was superb."),
    OrderCase("intensity", "The view was nice.", "The view was breathtaking."),
    OrderCase("intensity", "I like it.", "I love it."),
    OrderCase("intensity", "It was okay.", "It was excellent."),
    OrderCase("intensity", "The food was terrible.", "The food was bad."),
    OrderCase("intensity", "I hate it.", "I dislike it."),
    OrderCase("intensity", "The film was a complete disaster.", "The film was disappointing."),
    OrderCase("intensity", "The hotel was good.", "The hotel was extremely good."),
    OrderCase("intensity", "The meal was very disappointing.", "The meal was slightly disappointing."),
    # Direction: adding a complaint lowers the score, adding praise raises it.
    OrderCase("direction", "The room was clean, but the staff were rude.", "The room was clean."),
    OrderCase("direction", "The room was small.", "The room was small, but the view was stunning."),
    OrderCase("direction", "The battery lasts two days, and the screen cracked in a week.", "The battery lasts two days."),
    OrderCase("direction", "The flight was on time.", "The flight was on time and the crew were lovely."),
    # Invariance: names, places, typos and punctuation do not change the verdict.
    SameCase("invariance", "Anna loved the new restaurant in Paris.", "Mohammed loved the new restaurant in Lagos."),
    SameCase("invariance", "The flight to Chicago was delayed for five hours and nobody told us why.",
             "The flight to Mumbai was delayed for five hours and nobody told us why."),
    SameCase("invariance", "The customer service was excellent.", "The custmer service was excelent."),
    SameCase("invariance", "This is a great product.", "this is a great product"),
    SameCase("invariance", "I hated every minute of it.", "I hated every minute of it!!"),
    SameCase("invariance", "John said the phone is useless.", "Priya said the phone is useless."),
    SameCase("invariance", "The pasta was cold and bland.", "The pasta was cold and bland :("),
)


@dataclass
class ChecklistReport:
    passed: int
    total: int
    by_capability: dict[str, tuple[int, int]] = field(default_factory=dict)  # capability -> (passed, total)
    failures: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{name} {passed}/{total}" for name, (passed, total) in self.by_capability.items())
        return f"{self.passed}/{self.total} ({self.pass_rate:.1%}): {parts}"


def checklist_texts(cases: Sequence[Case] = CASES) -> list[str]:
    """Every sentence the cases need, each once, in order of first use."""
    return list(dict.fromkeys(text for case in cases for text in case.texts()))


def run_checklist(predict: Callable[[list[str]], Sequence[Prediction]], cases: Sequence[Case] = CASES) -> ChecklistReport:
    texts = checklist_texts(cases)
    predictions = dict(zip(texts, predict(texts)))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    report = ChecklistReport(passed=0, total=len(cases))
    for case in cases:
        outcome = [predictions[text] for text in case.texts()]
        ok = case.passes(outcome)
        counts[case.capability][0] += ok
        counts[case.capability][1] += 1
        report.passed += ok
        if not ok:
            report.failures.append(f"[{case.capability}] {case.describe(outcome)}")
    report.by_capability = {name: (passed, total) for name, (passed, total) in counts.items()}
    return report


def vader_predictions(texts: list[str]) -> list[Prediction]:
    """VADER read as in its paper: compound >= 0.05 positive, <= -0.05 negative, else neutral."""
    from models.sentiment_data import vader_compound

    compound = vader_compound(texts)
    labels = [LABELS[2] if c >= 0.05 else LABELS[0] if c <= -0.05 else LABELS[1] for c in compound]
    return [Prediction(label, float(c)) for label, c in zip(labels, compound)]
