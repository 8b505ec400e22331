"""Drives the demo page in headless Chromium (Playwright with the system's Chromium), for the tests and for the
README's screenshot:

    python tests/demo_browser.py --photo tests/assets/bsds_481x321.jpg --screenshot docs/demo.jpg

Debian's ``chromium`` package is used (``apt-get install -y chromium``; ``.ci/run`` installs it when missing);
Playwright's own browser download is not needed. ``SODEC_CHROMIUM`` names another Chromium binary.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

from ports import free_port


#: What a decode takes on a slow CPU, with the baseline grids (milliseconds).
TIMEOUT_MS = 240_000


def chromium_path() -> Optional[str]:
    return os.environ.get("SODEC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def serve(pipe, model_name: str, perceptual=None, card=None):
    """Starts the demo page of ``pipe`` on a free port of 127.0.0.1, in this process; returns (demo, url)."""
    from sodec_pipeline.demo.app import build_demo

    demo = build_demo(pipe, model_name, perceptual, card=card)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def drive(url: str, photo: Path, downloads: Path, screenshot: Optional[Path] = None) -> Dict:
    """In the browser: upload ``photo``, compress, wait for the decodes, the figures and the download link,
    download the ``.sodec`` file, then decode it in the Decode tab. Returns what the page showed."""
    from playwright.sync_api import sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.locator("#compress").wait_for()
        seen["title"] = page.title()
        seen["intro"] = page.locator("body").inner_text()
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.locator("#photo").get_by_text(photo.name).first.wait_for()
        page.locator("#compress").click()
        page.locator("#stream-file a").first.wait_for()
        page.locator("#figures").get_by_text("SODEC fidelity").first.wait_for()
        seen["num_decodes"] = page.locator("#decodes img").count()
        seen["figures"] = page.locator("#figures").inner_text()
        seen["slider_images"] = page.locator("#slider img").count()
        seen["notes"] = page.locator("#codec-notes").inner_text()
        if screenshot is not None:
            jpeg = screenshot.suffix.lower() in (".jpg", ".jpeg")
            page.screenshot(path=str(screenshot), full_page=True, **({"type": "jpeg", "quality": 80} if jpeg else {}))
        with page.expect_download() as download_info:
            page.locator("#stream-file a").first.click()
        stream = downloads / download_info.value.suggested_filename
        download_info.value.save_as(stream)
        seen["stream"] = stream

        page.get_by_role("tab", name="Decode").click()
        page.locator("#upload-stream input[type=file]").set_input_files(str(stream))
        page.locator("#upload-stream").get_by_text(stream.name).first.wait_for()
        page.locator("#decode").click()
        page.locator("#header").get_by_text("bpp").first.wait_for()
        page.locator("#decoded img").first.wait_for()
        seen["header"] = page.locator("#header").inner_text()
        seen["num_decoded"] = page.locator("#decoded img").count()
        browser.close()
    return seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path, required=True)
    args = parser.parse_args(argv)
    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.cli.demo_command import model_card
    from sodec_pipeline.cli.model_loading import resolve_model
    from sodec_pipeline.metrics import load_perceptual_metrics

    source = resolve_model(args.model)
    pipe = SODECPipeline.from_pretrained(source)
    pipe.set_progress_bar_config(disable=True)
    perceptual, _ = load_perceptual_metrics()
    demo, url = serve(pipe, args.model, perceptual, card=model_card(source))
    try:
        seen = drive(url, args.photo, args.screenshot.parent, screenshot=args.screenshot)
    finally:
        demo.close()
    seen["stream"].unlink()
    print(seen["figures"])
    print(seen["header"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
