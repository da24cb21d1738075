"""The list of rules `make mutate` checks, and its score from mutmut's results.

`python tests/mutation_score.py --targets` prints the mutant-name patterns for `mutmut run`
(one per line); with no argument it reads the results under mutants/, prints the score per
rule and every survivor, and exits 1 when a survivor is not explained in docs/testing.md
(`--markdown` prints the score as the table docs/testing.md keeps).
The list lives here so the run and the score cannot disagree about what was mutated."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EXPLANATIONS = ROOT / "docs" / "testing.md"

C = "\u01c1"  # mutmut's separator between a class and its method in a mutant name

RULES: dict[str, tuple[str, ...]] = {
    "consent policy": ("hub.consent.policy.x_*",),
    "access rule": (f"hub.inbox.access.x{C}StaffContext{C}*",),
    "status ordering": ("hub.enums.x_can_advance__*",),
    "bounce permanence": (
        "hub.channels.email_smtp.bounce.x__permanent__*",
        "hub.channels.email_smtp.bounce.x__status__*",
        "hub.channels.email_smtp.bounce.x_delivery_report__*",
        "hub.channels.email_smtp.bounce.x_plain_bounce__*",
    ),
    "audit chain": (
        "hub.audit.x_compute_hash__*",
        "hub.audit.x_record__*",
        "hub.audit.x_verify__*",
        "hub.audit.x__events__*",
        f"hub.audit.x{C}AuditEvent{C}expected_hash__*",
        f"hub.audit.x{C}Anchor{C}parse__*",
    ),
    "keyword detection": ("hub.inbox.actions.intake.x_detect_keyword__*",),
    "signature checks": (
        f"hub.channels.twilio_sms.rest.x{C}TwilioRest{C}verify__*",
        "web.email.x_inbound_webhook__*",
    ),
    "exactly-once dispatch": (
        "hub.journeys.dispatch.x__claim_first_attempt__*",
        "hub.inbox.actions.delivery.x_do_claim_send__*",
    ),
}
"""Rule -> the functions that carry it, as mutmut mutant-name patterns."""

KILLED = {1, 3, 37, 36, 24, -24, 152, 255}
"""mutmut exit codes that mean a test noticed: failed, pytest error, type check, timeout."""
SURVIVED = {0}
"""The suite passed with the mutant in."""
TIMED_OUT = {36, 24, -24, 152, 255}
"""Killed by mutmut's CPU-time limit rather than by a failing test. Counted as killed (an
endless loop is caught no other way), but listed: on a busy machine a mutant the tests do not
catch can run out of time too."""

MUTANT_NAME = re.compile(r"`([\w.\u01c1]+__mutmut_\d+)`")


def rule_of(name: str) -> str | None:
    for rule, patterns in RULES.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return rule
    return None


def explained_names() -> set[str]:
    """Mutant names quoted in docs/testing.md's "Survivors explained" section."""
    text = EXPLANATIONS.read_text(encoding="utf-8") if EXPLANATIONS.exists() else ""
    _, _, section = text.partition("## Survivors explained")
    section = section.split("\n## ", 1)[0]
    return set(MUTANT_NAME.findall(section))


def results() -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in MUTANTS.rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def main(argv: list[str]) -> int:
    if argv[1:] == ["--targets"]:
        print("\n".join(p for patterns in RULES.values() for p in patterns))
        return 0
    codes = results()
    if not codes:
        print("no mutmut results under mutants/: run `make mutate`", file=sys.stderr)
        return 2
    explained = explained_names()
    table: dict[str, Counter[str]] = {rule: Counter() for rule in RULES}
    unexplained: list[str] = []
    for name, code in sorted(codes.items()):
        rule = rule_of(name)
        if rule is None:
            continue
        row = table[rule]
        row["mutants"] += 1
        if code in KILLED:
            row["killed"] += 1
        elif name in explained:
            row["explained"] += 1
        elif code in SURVIVED:
            row["survived"] += 1
            unexplained.append(f"{name}  (survived; `mutmut show {name}`)")
        else:
            # Not run, no test reaches it, or a crash: as bad as a survivor until looked at.
            row["untested"] += 1
            unexplained.append(f"{name}  (exit code {code}: not tested)")
    markdown = "--markdown" in argv[1:]
    line = _markdown if markdown else _line
    if markdown:
        print("| rule | mutants | killed | survived | explained | not tested | score |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    else:
        print(
            f"{'rule':<24}{'mutants':>8}{'killed':>8}{'survived':>10}{'explained':>11}"
            f"{'untested':>10}{'score':>8}"
        )
    total: Counter[str] = Counter()
    for rule, row in table.items():
        total.update(row)
        print(line(rule, row))
    print(line("all", total))
    timed_out = sorted(n for n, c in codes.items() if c in TIMED_OUT and rule_of(n))
    if timed_out and not markdown:
        print(
            f"\n{len(timed_out)} of the killed timed out: rerun them (`mutmut run NAME...`) "
            "on a quiet machine to see a test fail:"
        )
        print("\n".join(f"  {name}" for name in timed_out))
    stale = sorted(explained - set(codes))
    if stale:
        print("\nExplained in docs/testing.md but no longer a mutant (renumbered? re-check):")
        print("\n".join(f"  {name}" for name in stale))
    if unexplained:
        print("\nSurvivors neither killed nor explained in docs/testing.md:")
        print("\n".join(f"  {line}" for line in unexplained))
        return 1
    return 0


def _score(row: Counter[str]) -> str:
    """Killed among the mutants that are bugs (the explained ones are not)."""
    judged = row["mutants"] - row["explained"]
    return f"{100 * row['killed'] / judged:.0f}%" if judged else "-"


def _markdown(rule: str, row: Counter[str]) -> str:
    cells = [row[k] for k in ("mutants", "killed", "survived", "explained", "untested")]
    return f"| {rule} | " + " | ".join(map(str, cells)) + f" | {_score(row)} |"


def _line(rule: str, row: Counter[str]) -> str:
    score = _score(row)
    return (
        f"{rule:<24}{row['mutants']:>8}{row['killed']:>8}{row['survived']:>10}"
        f"{row['explained']:>11}{row['untested']:>10}{score:>8}"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
