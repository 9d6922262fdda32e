"""Where a refacer's own-face correlation comes from: each suspect changed alone (issue 18).

Run: python bench/reface_sources.py BIDS STUDY [VARIANT ...]
STUDY must hold every scan's brain mask and brain registration (e.g. after
``bench/reface_identity.py BIDS STUDY``); nothing is written. Every variant refaces every
scan in memory and prints the own-face excess and rank-1 share of
:mod:`defacebench.deface.reface_check` over each region within every scan's field of view
("common view") and over the whole region ("every view", the measurement before the
field-of-view cut). Variants: the built methods and, one change each, afnireface without its
blur, with its shell through the 9-parameter part of the brain registration (as before),
afnirefaceplus likewise, mrireface with its SyN off, with the full warp, with other fade
depths, and with linear intensities and/or no noise (SyN off). docs/defacing.md has the table.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings

import nibabel as nib
import numpy as np


def main() -> None:
    from defacebench import layout
    from defacebench.cohort import read_cohort
    from defacebench.deface import afnireface, afnirefaceplus, mrireface
    from defacebench.deface import refacing as rf
    from defacebench.deface.context import SubjectContext
    from defacebench.deface.reface_check import INSIDE_REGION, seen_by_everyone, to_mni_grid
    from defacebench.imaging.registration import load_transform
    from defacebench.io.nifti import load_image

    @contextlib.contextmanager
    def patched(module, **names):
        saved = {k: getattr(module, k) for k in names}
        for k, v in names.items():
            setattr(module, k, v)
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(module, k, v)

    def afni_nine(ctx: SubjectContext, whole: bool) -> rf.Refacing:
        coords = ctx.mni_coordinates(ctx.subject_head_to_mni())
        region = np.ones(ctx.shape, dtype=bool) if whole else afnireface.mni_removal(coords)
        return rf.afni_fill(ctx.data, region, rf.shell_on_subject(coords, None if whole else region), rf.voxel_sizes(ctx), ctx.brain())

    def mri(**names):
        def run(ctx: SubjectContext) -> rf.Refacing:
            with patched(mrireface, **names):
                return mrireface.reface(ctx)
        return run

    fade = mrireface.fade_into_labels

    def fade_at(mm: float):
        return lambda coords, affine_coords, voxel_mm, fade_mm=None: fade(coords, affine_coords, voxel_mm, fade_mm=mm)

    def syn_off(ctx: SubjectContext) -> np.ndarray:
        return ctx.mni_coordinates()

    def linear(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return (values * (reference.mean() / values.mean())).astype(np.float32)

    def no_blur(ctx: SubjectContext) -> rf.Refacing:
        with patched(rf, blur_in_mask=lambda data, *args, **kwargs: data):
            return afnireface.reface(ctx)

    variants = {
        "afnireface": afnireface.reface,
        "afnireface-no-blur": no_blur,
        "afnireface-shell-9dof": lambda ctx: afni_nine(ctx, whole=False),
        "afnirefaceplus": afnirefaceplus.reface,
        "afnirefaceplus-shell-9dof": lambda ctx: afni_nine(ctx, whole=True),
        "mrireface": mrireface.reface,
        "mrireface-full-warp": mri(fade_into_labels=fade_at(np.inf)),
        "mrireface-fade-0": mri(fade_into_labels=fade_at(0.0)),
        "mrireface-fade-20": mri(fade_into_labels=fade_at(20.0)),
        "mrireface-syn-off": mri(mni_coordinates=syn_off),
        "mrireface-syn-off-linear": mri(mni_coordinates=syn_off, match_intensities=linear),
        "mrireface-syn-off-no-noise": mri(mni_coordinates=syn_off, noise_levels=lambda *args: (0.0, 0.0)),
        "mrireface-syn-off-linear-no-noise": mri(mni_coordinates=syn_off, match_intensities=linear, noise_levels=lambda *args: (0.0, 0.0)),
    }
    parser = argparse.ArgumentParser()
    parser.add_argument("bids")
    parser.add_argument("study")
    parser.add_argument("variants", nargs="*", help=f"any of {', '.join(variants)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(variants))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}")
    args.variants = args.variants or list(variants)
    warnings.simplefilter("ignore")
    subjects = read_cohort(args.bids).subjects
    contexts, own, views = [], [], []
    for subject in subjects:
        files = layout.scan_files(args.study, subject)
        img = load_image(subject.path, reorient=False)
        ctx = SubjectContext(img, brain_mask=np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0, to_mni=load_transform(files["to_mni"]))
        contexts.append(ctx)
        own.append(to_mni_grid(img, ctx.to_mni))
        views.append(to_mni_grid(nib.Nifti1Image(np.ones(ctx.shape, dtype=np.float32), img.affine), ctx.to_mni) >= INSIDE_REGION)
    print(f"{len(subjects)} people; chance rank-1 {1 / len(subjects):.2f}")
    print(f"{'variant':36s} {'excess (common view)':>21s} {'rank-1':>7s} {'excess (every view)':>20s} {'rank-1':>7s}")
    for name in args.variants:
        refaced, regions = [], []
        for ctx in contexts:
            result = variants[name](ctx)
            image = ctx.data * (1 - result.removal) + result.fill
            refaced.append(to_mni_grid(nib.Nifti1Image(image.astype(np.float32), ctx.affine), ctx.to_mni))
            regions.append(to_mni_grid(nib.Nifti1Image(result.removal.astype(np.float32), ctx.affine), ctx.to_mni) >= INSIDE_REGION)
        common = rf.own_face_excess(rf.region_correlations(refaced, own, seen_by_everyone(regions, views)), permutations=0)
        every = rf.own_face_excess(rf.region_correlations(refaced, own, regions), permutations=0)
        print(f"{name:36s} {common['excess']:21.4f} {common['rank1']:7.2f} {every['excess']:20.4f} {every['rank1']:7.2f}", flush=True)


if __name__ == "__main__":
    main()
