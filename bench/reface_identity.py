"""Own-face versus other-face correlation of refaced regions on a simulated cohort (issue 18).

Run: python bench/reface_identity.py BIDS STUDY [--methods afnireface,afnirefaceplus,mrireface]
Refaces every scan of BIDS into STUDY (reusing brain masks and transforms already there),
then prints, per method, the mean correlation of each refaced region with its own person's
raw head and with the others', the excess (own - other) and the rank-1 share (chance 1/N).
A positive control is printed too: each person's raw head re-noised (the same face, other
noise), which a leaky refacer would resemble. p: permutation p-value of the excess (people
relabelled at random, 2000 times; it calls even the measurement's own floor of a few
ten-thousandths significant, docs/defacing.md). The floor, per method: its regions filled
with the shell through each scan's brain registration (the same MNI image for everyone);
"above the floor" is the method's excess minus the floor's, with a sign-flip p over people.
Meaningful only when the people's faces differ (simulated identities); on one base head
every face is nearly the same.
"""

from __future__ import annotations

import argparse
import warnings


def main() -> None:
    from defacebench.cohort import read_cohort
    from defacebench.conditions import REFACERS
    from defacebench.deface import deface_cohort
    from defacebench.deface.reface_check import own_face_control, own_face_correlations, own_face_floor
    from defacebench.deface.refacing import excess_above_floor

    parser = argparse.ArgumentParser()
    parser.add_argument("bids")
    parser.add_argument("study")
    parser.add_argument("--methods", default=",".join(REFACERS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    cohort = read_cohort(args.bids)
    warnings.simplefilter("ignore")
    deface_cohort(cohort, args.study, methods, jobs=1, bids_root=args.bids, progress=False)

    def p_text(p: float) -> str:
        return "p < 0.001" if p < 0.001 else f"p {p:.3f}"

    def row(name: str, result: dict, extra: str = "") -> None:
        print(f"{name:32s} {result['own']:7.3f} {result['other']:8.3f} {result['excess']:7.4f} {result['rank1']:7.2f}"
              f" ({p_text(result['p_permutation'])}){extra}")

    print(f"{len(cohort.subjects)} people; chance rank-1 {1 / len(cohort.subjects):.2f}")
    print(f"{'method':32s} {'own r':>7s} {'other r':>8s} {'excess':>7s} {'rank-1':>7s}")
    for method in methods:
        result = own_face_correlations(args.study, cohort.subjects, method)
        floor = own_face_floor(args.study, cohort.subjects, method)
        above = excess_above_floor(result["correlations"], floor["correlations"])
        row(method, result, f"; above the floor {above['above_floor']:.4f} (sign-flip {p_text(above['p_above_floor'])})")
        row("  floor: shell via the brain", floor)
    row("control: own head re-noised", own_face_control(args.study, cohort.subjects, methods[0]))


if __name__ == "__main__":
    main()
