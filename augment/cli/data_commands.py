"""The dataset commands: simulate, check, keypoints, cutpaste, build, filter, browse, export."""
from __future__ import annotations

from collections import Counter

from augment.cli.parser import config_arguments, format_argument, number, quiet_argument, seed
from augment.gallery.collect import read_dataset
from augment.gallery.page import write_gallery
from augment.makers.build_config import BuildConfig, parse_shard
from augment.makers.build_output import skipped_line as build_skipped_line
from augment.makers.builder import build
from augment.makers.cutpaste import cut_paste, skipped_line
from augment.makers.export import EXPORTS, export_dataset, training_only_marker
from augment.makers.plates import PLATES
from generator.config import load_config
from generator.data.dataset import check_images, person_dataset
from generator.data.estimate import plan_keypoints, write_keypoints
from generator.data.estimators import ESTIMATORS, make_estimator
from generator.data.keypoints import outside_note
from generator.data.layouts import DATASET_NAMES, check_protocol, detect_format, scan_dataset
from generator.errors import UserError
from generator.pose import NO_PERSON
from generator.simmarket.simulate import LAYOUTS, parse_size, simulate
from generator.simmarket.world import STYLES
from reid.consistency import filter_generated


def _cmd_simulate(args) -> None:
    size = parse_size(args.size)
    s = simulate(args.out, args.ids, seed=args.seed, size=size, overwrite=args.overwrite, progress=not args.quiet,
                 train_cameras=args.train_cameras, layout=args.layout, style=args.style, people_seed=args.people_seed,
                 train_share=args.train_share)
    print(
        f"SimMarket: {s['identities']} identities ({s['train_ids']} train / {s['test_ids']} test), "
        f"{s['images']} images "
        f"(train {s['train']}, query {s['query']}, gallery {s['gallery']} incl. {s['distractors']} distractors and "
        f"{s['junk']} junk) at {s['height']}x{s['width']} in {s['seconds']:.1f} s "
        f"({s['images'] / s['seconds']:.0f} img/s)"
        + (f" in the {args.layout} layout" if args.layout != "market1501" else "") + f" -> {args.out}"
    )


NAMES_SHOWN = 5  # `vmarket check`: images named per class of problem


def _cmd_check(args) -> None:
    size = parse_size(args.size)
    marker = training_only_marker(args.root)
    splits = ("train",) if marker else ("train", "query", "gallery")
    # names, then image contents, then keypoints: the first error named is the file's own defect, not the
    # keypoint row a broken or stray file never had
    fmt = args.format if args.format != "auto" else detect_format(args.root, "--format")
    scanned = scan_dataset(args.root, splits, keep_junk=True, fmt=fmt, fmt_key="--format")
    check_images(scanned, size, progress=not args.quiet,
                 size_fix="every image of a dataset has one size: resize this one, or pass --size {h}x{w} if "
                          "the whole dataset is {h}x{w} (default 128x64)")
    ds = person_dataset(args.root, splits, size=size, keypoints_csv=args.keypoints, keep_junk=True,
                        skip_missing_keypoints=args.skip_missing_keypoints, fmt=fmt, fmt_key="--format")
    by_split = Counter(r.split for r in ds.records)
    if not marker:
        check_protocol(scanned, fmt)  # every image on disk, also those --skip-missing-keypoints leaves out
    if ds.skipped_missing and not by_split["train"]:
        raise UserError(f"{args.root}: no training image has a keypoint row (--skip-missing-keypoints left out "
                        f"{ds.skipped_missing} person images), so no training command can use this dataset; check "
                        "that the training keypoint CSV names these images")
    ids = {s: len({r.pid for r in ds.records if r.split == s and r.is_person}) for s in ("train", "query", "gallery")}
    cams = sorted({r.camid for r in ds.records})
    missing = sum(int((rcv[:, 2] == 0).sum()) for rcv in ds.rcv)
    print(
        f"ok: {len(ds)} images at {size[0]}x{size[1]} (train {by_split['train']} / {ids['train']} ids, "
        f"query {by_split['query']} / {ids['query']} ids, gallery {by_split['gallery']}), cameras {cams}, "
        f"{missing / (18 * len(ds)):.1%} joints missing"
        + (f"; without a keypoint row: {ds.skipped_unlabelled} junk / distractor images (never trained on)"
           if ds.skipped_unlabelled else "")
        + (f", {ds.skipped_missing} person images (left out: --skip-missing-keypoints)" if ds.skipped_missing else "")
        + (f"; {outside_note(ds.joints_outside, ds.rows_outside, NAMES_SHOWN)}" if ds.joints_outside else "")
        + f" -> {args.root} ({DATASET_NAMES[fmt]}"
        + (f"; a training-only set, by its {marker}: its training split checked" if marker else "") + ")"
    )
    nobody = ds.without_person()
    if nobody:
        names = ", ".join(f"{r.split}/{r.keypoint_name}" for r in nobody[:NAMES_SHOWN])
        print(f"no visible person: {len(nobody)} of {sum(r.is_person for r in ds.records)} person images "
              f"({NO_PERSON}); cut-and-paste and the builder never use them as a person, stage I trains on them "
              f"(it reads no label): {names}" + (f" and {len(nobody) - NAMES_SHOWN} more" if len(nobody) > NAMES_SHOWN
                                                 else ""))


def _cmd_build(args) -> None:
    cfg = load_config(BuildConfig, args.config, args.set)
    s = build(cfg, parse_shard(args.shard), progress=not args.quiet)
    line = (f"build shard {s['shard']}: {s['identities']} identities ({s['rendered_now']} rendered now, "
            f"{s['images_now']} images at {s['images_per_s']:.1f} img/s); "
            + (f"backgrounds from cameras the identity was never seen in {s['bg_unseen_camera_share']:.1%}"
               if "bg_unseen_camera_share" in s else f"novelty rejection rate {s['novelty_rejection_rate']:.1%}"))
    if s.get("finalized"):
        line += (f"; dataset complete: {s['images']} images (train {s['n_train']}, query {s['n_query']}, "
                 f"gallery {s['n_gallery']})")
    else:
        line += "; waiting for the other shards before writing the manifest"
    print(f"{line} -> {cfg.out}")
    if build_skipped_line(s):
        print(build_skipped_line(s))


def _cmd_cutpaste(args) -> None:
    s = cut_paste(args.root, args.out, per_image=args.per_image, seed=args.seed, size=parse_size(args.size),
                  mask_radius=args.mask_radius, blur=args.blur, plates=args.plates, stage1_run=args.stage1_run,
                  keypoints_csv=args.keypoints, skip_missing_keypoints=args.skip_missing_keypoints,
                  jpeg_quality=args.jpeg_quality, device=args.device, progress=not args.quiet)
    what = f"cutpaste {PLATES[s['plates']].what}"
    if s.get("already_complete"):
        print(f"{what}: already complete, {s['images']} images -> {args.out}")
    else:
        print(f"{what}: {s['images']} images ({s['sources']} source images, {s['identities']} identities; "
              f"{s['written_now']} written now at {s['images_per_s']:.0f} img/s); donor from a camera the identity "
              f"never appears in: {s['donor_camera_unseen']:.1%} -> {args.out}")
    if skipped_line(s, args.out):
        print(skipped_line(s, args.out))


def _cmd_filter(args) -> None:
    s = filter_generated(args.model, args.real_root, args.generated, args.out, model=args.model_name,
                         size=parse_size(args.size) if args.size else None, new_tau=args.new_tau,
                         progress=not args.quiet, device=args.device)
    print(f"filter: {s['images']} images ({s['remix_images']} of real identities, {s['new_images']} new), kept "
          f"{s['kept']}, rejection rate {s['rejection_rate']:.1%} over {s['identities']} identities -> {args.out}")


def _cmd_browse(args) -> None:
    gallery = read_dataset(args.dataset, args.real)
    s = write_gallery(gallery, args.out, progress=not args.quiet)
    origins = ", ".join(f"{value} {label}" for label, value, _ in gallery.summary if label.endswith(" images")
                        and label != "real images")
    print(f"gallery ({gallery.title}): {s['identities']} identities, {origins}; {s['thumbnails']} thumbnails, "
          f"{s['bytes'] / 1e6:.1f} MB, {s['pages']} pages, in {s['seconds']:.1f} s -> {s['index']}")


def _cmd_export(args) -> None:
    s = export_dataset(args.dataset, args.out, args.to, fmt=args.format, progress=not args.quiet)
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    files = ("hard links" if not s["copied"] else "copies (no hard link possible)" if s["copied"] == s["images"]
             else f"{s['copied']} copies (no hard link possible), the rest hard links")
    print(f"{args.to}: {s['images']} images of {s['identities']} identities ({splits})"
          + (f"; {s['left_out']} junk or distractor images left out" if s["left_out"] else "")
          + f"; {files}; in {s['seconds']:.1f} s -> {s['out']}")
    if args.to == "msmt17" and s["training_only"]:
        print("no query: torchreid's msmt17 dataset cannot load this export alone (IndexError on the empty query); "
              "to train beside real data, give the dataset itself to "
              "reid.extra_training.register_with_extra_training (docs/export.md)")


def _cmd_keypoints(args) -> None:
    # a bad dataset or --out is refused before a model loads
    plan = plan_keypoints(args.root, args.out, args.overwrite, fmt=args.format)
    estimator = make_estimator(args.estimator, args.weights, device=args.device)
    s = write_keypoints(args.root, estimator, out=args.out, batch=args.batch, overwrite=args.overwrite,
                        progress=not args.quiet, fmt=args.format, plan=plan)
    print(f"keypoints ({args.estimator}): {s['images']} images ({s['estimated_now']} estimated now at "
          f"{s['images_per_s']:.1f} img/s), {s['joints_found']:.1%} joints detected, no visible person in "
          f"{s['no_person']} of {s['person_images']} person images ({NO_PERSON}) -> {', '.join(s['outputs'])}")


def add_simulate(sub) -> None:
    s = sub.add_parser("simulate", help="write a SimMarket dataset (Market-1501 layout, keypoints, manifest)")
    s.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    s.add_argument("--ids", type=int, required=True,
                   help="number of identities, split between train and test by --train-share")
    s.add_argument("--seed", type=seed, default=0, help="random seed; the same seed gives the same dataset")
    s.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH (default 128x64)")
    s.add_argument("--train-cameras", type=int, default=0, metavar="K",
                   help="limit every training identity to exactly K of the 6 cameras (test identities keep 2-6); "
                        "default 0: no limit")
    s.add_argument("--layout", choices=LAYOUTS, default="market1501",
                   help="write the dataset in this dataset's layout: market1501 (default), duke (DukeMTMC-reID), "
                        "msmt17 (list files), cuhk03 (CUHK03's new protocol with its images already extracted: "
                        "cuhk03_new_protocol_config_*.mat, images_detected/, images_labeled/; no raw "
                        "cuhk03_release/cuhk-03.mat, so torchreid's CUHK03 class does not read it: load it with "
                        "reid.torchreid_adapter.register_market); the same images and identities")
    s.add_argument("--style", choices=STYLES, default="flat",
                   help="how people are drawn: flat (default) or textured (grain, light from above, inked outlines, "
                        "duller scenes); the same identities, poses and keypoints")
    s.add_argument("--people-seed", type=seed, default=None, metavar="SEED",
                   help="draw the people (and their cameras and poses) from this seed, the scenes from --seed: other "
                        "people in the same cameras, e.g. an unlabelled split for a generator (default: --seed)")
    s.add_argument("--train-share", type=number(0.0, 1.0), default=0.5, metavar="S",
                   help="share of the identities in the training split (default 0.5)")
    s.add_argument("--overwrite", action="store_true", help="replace the SimMarket at --out (never other data)")
    quiet_argument(s, "bar")
    s.set_defaults(func=_cmd_simulate)


def add_check(sub) -> None:
    c = sub.add_parser("check", help="validate a re-ID dataset (Market-1501, DukeMTMC-reID, MSMT17, CUHK03): names, "
                                     "keypoints, images")
    c.add_argument("--root", required=True, help="dataset root (holding bounding_box_train/ or Market-1501-v15.09.15/, "
                                                 "DukeMTMC-reID/, MSMT17_V1/, cuhk03/, ...)")
    format_argument(c)
    c.add_argument("--keypoints", default=None,
                   help="keypoint CSV for all splits (default: market-annotation-*.csv in the root)")
    c.add_argument("--size", default="128x64", help="expected image size HEIGHTxWIDTH (default 128x64)")
    c.add_argument("--skip-missing-keypoints", action="store_true",
                   help="count person images without a keypoint row instead of refusing the dataset")
    quiet_argument(c, "bar")
    c.set_defaults(func=_cmd_check)


def add_build(sub) -> None:
    b = sub.add_parser("build", help="build a Virtual Market: N identities x K images, filters, Market-1501 layout "
                                     "and exports",
                       description="Build a Virtual Market. With test_share: 0 (the default) the output is a "
                                   "training-only set: its query/ is empty, so torchreid's Market1501 raises "
                                   "IndexError on it. Train on it beside a real dataset with "
                                   "reid.extra_training.register_with_extra_training (remixes of fg_mode: real keep "
                                   "their real identities, sampled ones are added as new identities); the output's "
                                   "README.txt holds the code.")
    config_arguments(b, None, "YAML build config (e.g. configs/demo/build.yaml)")
    b.add_argument("--shard", default=None, metavar="I/N",
                   help="build identities i, i+n, ... only (default: torchrun rank / world)")
    quiet_argument(b, "bar")
    b.set_defaults(func=_cmd_build)


def add_cutpaste(sub) -> None:
    cp = sub.add_parser("cutpaste",
                        help="cut-and-paste baseline (no generator): every real training person, cut out by a soft "
                             "pose mask, pasted into another camera's image (or a generated background plate)",
                        description="Cut-and-paste: every real training person, cut out by a soft pose mask, pasted "
                                    "into another camera's image (or a generated background plate), keeping its real "
                                    "pid. The output is a training-only set (no query or gallery images), which "
                                    "torchreid's Market1501 cannot load (IndexError on the empty query): train on it "
                                    "beside the real dataset with reid.extra_training.register_with_extra_training, "
                                    "which keeps the real identities; the output's README.txt holds the code.")
    cp.add_argument("--root", required=True,
                    help="re-ID dataset with keypoints (its training split): Market-1501, DukeMTMC-reID, CUHK03 or "
                         "MSMT17; images whose keypoints show no person are skipped (OUT/skipped.csv)")
    cp.add_argument("--out", required=True,
                    help="output folder (Market-1501 layout, MSMT17's for MSMT17 data; training split only; must not "
                         "exist or be empty)")
    cp.add_argument("--per-image", type=int, default=1, help="pasted images per real training image (default 1)")
    cp.add_argument("--seed", type=seed, default=0, help="donor seed; the same seed gives the same dataset")
    cp.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH of the dataset (default 128x64)")
    cp.add_argument("--keypoints", default=None,
                    help="keypoint CSV of the training split (default: market-annotation-train.csv in the root)")
    cp.add_argument("--mask-radius", type=int, default=None,
                    help="disk radius (px) of the pose mask (default 7 at 128x64, scaled with the height: 4 at 64x32)")
    cp.add_argument("--blur", type=number(0.0), default=None,
                    help="Gaussian blur std (px) of the mask edge (default 2 at 128x64, scaled with the height)")
    cp.add_argument("--plates", choices=list(PLATES), default="image",
                    help="background: the donor image (default); a person-free plate stage I decodes from the "
                         "donor's background embedding (generator; needs --stage1-run); or the donor image with its "
                         "own person filled in by that plate (inpaint; needs --stage1-run); or half and half: the "
                         "donor image or its plate, a seeded random half each (mixed; needs --stage1-run)")
    cp.add_argument("--stage1-run", default=None,
                    help="--plates generator, inpaint or mixed: stage-I run directory or snapshot (e.g. "
                         "generator/reference/stage1.pt)")
    cp.add_argument("--device", default="cpu", help="device of the plate generator (default cpu)")
    cp.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    cp.add_argument("--skip-missing-keypoints", action="store_true",
                    help="leave out training images without a keypoint row instead of refusing the dataset")
    quiet_argument(cp, "bar")
    cp.set_defaults(func=_cmd_cutpaste)


def add_filter(sub) -> None:
    fl = sub.add_parser("filter",
                        help="identity-consistency filter: drop generated training images a re-ID model trained on "
                             "the real data places nearer another identity (or, for a new identity, too near a real "
                             "one)")
    fl.add_argument("--model", required=True, help="state.pt of a re-ID run trained on --real-root (vmarket reid)")
    fl.add_argument("--real-root", required=True,
                    help="the real dataset the model trained on (any layout the project reads)")
    fl.add_argument("--generated", required=True,
                    help="generated dataset: a build, cut-and-paste or hybrid output (its training split)")
    fl.add_argument("--out", required=True, help="output folder, in --generated's layout (Market-1501, or MSMT17's "
                                                 "for MSMT17 data); must not exist or be empty")
    fl.add_argument("--model-name", default=None,
                    help="torchreid model of the run (default: the run's, from the result.json beside --model; "
                         "osnet_x0_25 without one)")
    fl.add_argument("--size", default=None,
                    help="re-ID input size HEIGHTxWIDTH of the run (default: the run's, from its result.json; 128x64 "
                         "without one)")
    fl.add_argument("--new-tau", type=float, default=0.9,
                    help="drop a new identity's image whose cosine to a real identity's centroid is this or more "
                         "(default 0.9)")
    fl.add_argument("--device", default="auto", help="device of the re-ID model (default: cuda if available)")
    quiet_argument(fl)
    fl.set_defaults(func=_cmd_filter)


def add_browse(sub) -> None:
    br = sub.add_parser("browse",
                        help="static HTML gallery of a dataset vmarket wrote (build, cutpaste, filter, simulate): each "
                             "identity's real images, each generated image beside what made it; opens from disk",
                        description="Write a static, self-contained HTML gallery of a dataset vmarket wrote: "
                                    "OUT/index.html, its data and small JPEG thumbnails, no server needed (open "
                                    "index.html from disk). Per identity: its real training images, then each "
                                    "generated image beside its source and donor (cut-and-paste and the hybrids) or "
                                    "its source, pose and background (builds); counts at the top; filters by origin, "
                                    "camera and, for a filter's output, kept or rejected with the reason.")
    br.add_argument("dataset",
                    help="the --out folder of vmarket build, cutpaste (any --plates), filter or simulate")
    br.add_argument("--real", default=None, metavar="REAL_ROOT",
                    help="the real dataset the images were made from (default: the one the dataset records: "
                         "cutpaste.json's root, the build's data root or its stage-II run's)")
    br.add_argument("--out", required=True,
                    help="gallery folder (must not exist, be empty, or hold an earlier gallery, which is replaced)")
    quiet_argument(br, "bar")
    br.set_defaults(func=_cmd_browse)


def add_export(sub) -> None:
    ex = sub.add_parser("export",
                        help="labelled image folders of a dataset (build, cutpaste, filter, simulate or real data): "
                             "ImageFolder by split and pid, or MSMT17's list layout; hard links",
                        description="Write a dataset's person images as labelled folders for other code: "
                                    "imagefolder (OUT/<split>/<pid>/NAME; torchvision's ImageFolder(OUT/train) "
                                    "trains on the training identities alone) or msmt17 (OUT/msmt17/MSMT17_V1/ with "
                                    "list_*.txt, which torchreid's msmt17 dataset reads with root OUT when the "
                                    "dataset has a test split). The folder names are the dataset's pids; junk and "
                                    "distractor images are left out; the files are hard links (copies across file "
                                    "systems). Written beside OUT and renamed when complete.")
    ex.add_argument("dataset", help="any dataset the project reads: the --out of vmarket build, cutpaste, filter or "
                                    "simulate, or real data in any layout (Market-1501, DukeMTMC-reID, MSMT17, CUHK03)")
    ex.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    ex.add_argument("--to", choices=EXPORTS, default="imagefolder", help="the layout (default imagefolder)")
    format_argument(ex)
    quiet_argument(ex, "bar")
    ex.set_defaults(func=_cmd_export)


def add_keypoints(sub) -> None:
    kp = sub.add_parser("keypoints",
                        help="estimate the 18 COCO keypoints of every image of a re-ID dataset (Market-1501, "
                             "DukeMTMC-reID, MSMT17, CUHK03) and write the keypoint CSVs (resumes after a kill)")
    kp.add_argument("--root", required=True,
                    help="dataset root (holding bounding_box_train/ or Market-1501-v15.09.15/, DukeMTMC-reID/, "
                         "MSMT17_V1/, cuhk03/, ...)")
    format_argument(kp, "; CUHK03's labelled boxes: cuhk03_labeled")
    kp.add_argument("--out", default=None, metavar="CSV",
                    help="one CSV file (.csv) for all splits (default: "
                         "market-annotation-train.csv and market-annotation-test.csv "
                         "where check and training read them: beside the split folders or MSMT17 lists, in CUHK03's "
                         "images_detected/ or images_labeled/)")
    kp.add_argument("--estimator", choices=ESTIMATORS, default="mediapipe",
                    help="mediapipe (default; offline, pip install 'virtual-market[pose]') or keypointrcnn "
                         "(torchvision Keypoint R-CNN, more accurate, batched on a GPU; needs its weights)")
    kp.add_argument("--weights", default=None, metavar="FILE",
                    help="keypointrcnn weights (default: torchvision's cache, TORCH_HOME/hub/checkpoints)")
    kp.add_argument("--batch", type=int, default=16, help="images per estimator call and checkpoint (default 16)")
    kp.add_argument("--device", default="auto", help="keypointrcnn device (default: cuda if available)")
    kp.add_argument("--overwrite", action="store_true", help="replace existing keypoint CSVs")
    quiet_argument(kp, "bar")
    kp.set_defaults(func=_cmd_keypoints)
