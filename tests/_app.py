"""Helpers for the browser tests: the FiftyOne App server in a subprocess, headless Chromium driven by
Playwright, and an operator's form in the App (tests/test_app_browser.py)."""

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

CHROMIUM = os.environ.get("SAMTEXT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROMPT = '[data-cy="operators-prompt-modal"]'  # an operator's form, then "Executing..."
PROMPT_VIEW = '[data-cy="operators-prompt-view-modal"]'  # the run's progress and output, with "Done"
NOTIFICATION = '[role="alert"]'  # ctx.ops.notify() (notistack)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``python -m fiftyone.server.main`` on 127.0.0.1, in a subprocess that uses this process's database.

    The environment is this process's, taken after the database connection is made: it holds
    ``FIFTYONE_PRIVATE_DATABASE_PORT`` (the port of the ``mongod`` this process started or joined) and
    ``FIFTYONE_PLUGINS_DIR`` (tests/conftest.py), so the App sees the test's datasets and this plugin.
    """

    def __init__(self, log_dir):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(log_dir, "fiftyone-server.log")
        self.proc = None

    def start(self, timeout=120):
        import fiftyone as fo

        fo.list_datasets()  # connects, so that the database's port is in os.environ for the child
        if not (os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT") or fo.config.database_uri):
            pytest.fail("no FIFTYONE_PRIVATE_DATABASE_PORT after connecting: the App would start another database")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fiftyone.server.main", "--address", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True,
            )
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/fiftyone", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail("the FiftyOne App server exited with %s:\n%s" % (self.proc.returncode, self.log_tail()))
            if time.time() > deadline:
                pytest.fail("the FiftyOne App server did not answer in %ds:\n%s" % (timeout, self.log_tail()))
            time.sleep(0.5)

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)


def require_chromium():
    """Fails (never skips) when Chromium or Playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            "no Chromium at %s: the browser tests need it (Debian: apt-get install chromium; "
            "or set SAMTEXT_CHROMIUM to a Chromium binary)" % CHROMIUM
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need the playwright package: pip install playwright")


@contextlib.contextmanager
def chromium_page(width=1400, height=900):
    """A page of a fresh headless Chromium (its own temporary profile); closed on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="samtext-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                # The App's own e2e switch: no analytics, no "Explore Enterprise" pop-over, no toasts about
                # query performance (they would cover the grid in screenshots).
                context.add_init_script("window.IS_PLAYWRIGHT = true;")
                context.set_default_timeout(30_000)
                page = context.pages[0] if context.pages else context.new_page()
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def app_session(ds, log_dir, width=1400, height=900):
    """The App server and a headless Chromium page (``width`` x ``height``) for the persistent dataset ``ds`` (the
    server is another process, so the dataset must be persistent); ``ds`` is deleted at the end. Yields
    ``(server, page)``."""
    import fiftyone as fo

    server = AppServer(log_dir)
    try:
        server.start()
        with chromium_page(width, height) as page:
            yield server, page
    finally:
        server.stop()
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)


def expect():
    """Playwright's ``expect`` (imported late: the package is only needed by the browser tests)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def _xpath_literal(text):
    assert '"' not in text, text
    return '"%s"' % text


class OperatorPrompt:
    """An operator's form in the App (MUI widgets that FiftyOne renders from ``resolve_input``), found by
    the labels the operator gives its fields."""

    def __init__(self, page):
        self.page = page
        self.dialog = page.locator(PROMPT)

    def wait(self):
        self.dialog.wait_for()
        return self

    def label(self, text):
        return self.dialog.locator("xpath=.//p[normalize-space()=%s]" % _xpath_literal(text))

    def input(self, label):
        """The text/number input that follows a field's label."""
        return self.label(label).locator("xpath=following::input[1]")

    def fill(self, label, value):
        field = self.input(label)
        field.fill(str(value))
        field.press("Tab")  # commits autocomplete inputs (FiftyOne's AutocompleteView)
        return field

    def select(self, label):
        """The MUI Select (a DropdownView) that follows a field's label."""
        return self.label(label).locator("xpath=following::*[@role='combobox'][1]")

    def options(self, label):
        self.select(label).click()
        options = self.page.locator('li[role="option"]')
        options.first.wait_for()
        texts = options.all_inner_texts()
        self.page.keyboard.press("Escape")
        options.first.wait_for(state="detached")
        return texts

    def choose(self, label, option_text):
        """Picks the option whose text starts with ``option_text`` (the first, when several do)."""
        self.select(label).click()
        options = self.page.locator('li[role="option"]', has_text=option_text)
        exact = options.filter(has_text=re.compile(r"^\s*%s\s*$" % re.escape(option_text)))
        (exact if exact.count() else options).first.click()
        self.page.locator('li[role="option"]').first.wait_for(state="detached")

    def selected_value(self, label):
        """The value (not the label) of a DropdownView: MUI keeps it in a hidden input after the combobox."""
        return self.select(label).locator("xpath=following::input[1]").input_value()

    def radio(self, option_label):
        self.dialog.get_by_text(option_label, exact=True).click()

    def scroll_to_top(self):
        self.dialog.evaluate("d => d.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")

    @property
    def execute_button(self):
        return self.dialog.get_by_role("button", name="Execute", exact=True)

    def execute(self):
        """Clicks Execute (once the form is valid: the App checks it with the server, which took over 5 s for the
        review form on 200 photos in a loaded CI run); returns the params the App sent to the server."""
        expect()(self.execute_button).to_be_enabled(timeout=60_000)
        with self.page.expect_request(lambda r: "/operators/execute" in r.url) as request:
            self.execute_button.click()
        return json.loads(request.value.post_data)["params"]

    def cancel(self):
        self.dialog.get_by_role("button", name="Cancel").click()
        self.dialog.wait_for(state="detached")


def open_operator_from_browser(page, label, search):
    """Opens the Operator Browser (the ` key), finds ``label`` by searching ``search`` and opens its form."""
    box = page.get_by_placeholder("Search operations by name...")
    page.locator("body").press("`")
    box.wait_for()
    box.fill(search)
    page.get_by_text(label, exact=True).click()
    return OperatorPrompt(page).wait()


def wait_for_run(page, server, done_text, timeout=180):
    """Waits until a run started from a prompt ends: returns the text of the App's notification that
    matches ``done_text`` (a regex). Fails early, with the server's log, when the prompt shows an error or
    closes without that notification (FiftyOne 1.22 drops exceptions that a generator operator raises while
    it streams to the App: the prompt just closes)."""
    note = page.locator(NOTIFICATION).filter(has_text=re.compile(done_text))
    prompt = page.locator("%s, %s" % (PROMPT, PROMPT_VIEW))
    error = prompt.get_by_text(re.compile(r"^\s*Error:?\s*$"))
    closed_since = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if note.count():
            return note.first.inner_text()
        if error.count():
            pytest.fail("the run failed in the App: %s\nserver log:\n%s" % (prompt.first.inner_text(), server.log_tail()))
        if prompt.count():
            closed_since = None
        else:
            closed_since = closed_since or time.time()
            if time.time() - closed_since > 5:
                pytest.fail(
                    "the prompt closed without a notification matching %r; server log:\n%s"
                    % (done_text, server.log_tail())
                )
        page.wait_for_timeout(250)
    pytest.fail("the run did not end in %ds; server log:\n%s" % (timeout, server.log_tail()))


def wait_for_error(page, server, timeout=120):
    """Waits until a run started from a prompt fails, and returns the error the prompt shows. Fails if the
    prompt closes without showing one (within 5 s), or the run succeeds."""
    prompt = page.locator("%s, %s" % (PROMPT, PROMPT_VIEW))
    error = prompt.get_by_text(re.compile(r"^\s*Error:?\s*$"))
    closed_since = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if error.count():
            return "\n".join(prompt.all_inner_texts())
        if page.locator(NOTIFICATION).filter(has_text=re.compile(r"labelled \d+ images")).count():
            pytest.fail("the run succeeded; an error was expected")
        if prompt.count():
            closed_since = None
        else:
            closed_since = closed_since or time.time()
            if time.time() - closed_since > 5:
                pytest.fail("the prompt closed without showing the run's error; server log:\n%s" % server.log_tail())
        page.wait_for_timeout(250)
    pytest.fail("the run did not end in %ds; server log:\n%s" % (timeout, server.log_tail()))


def close_run(page, timeout=120):
    """Closes a finished run's prompt ("Done", or "Close" for a non-generator's result) and its
    notifications. The notification can come before the prompt shows its result (the operator still
    returning), so this keeps looking for the button until the prompt is gone."""
    prompt = page.locator("%s, %s" % (PROMPT, PROMPT_VIEW))
    deadline = time.time() + timeout
    while prompt.count():
        if time.time() > deadline:
            pytest.fail("the run's prompt did not close in %ds: %s" % (timeout, prompt.first.inner_text()))
        for button in (prompt.get_by_role("button", name="Done", exact=True),
                       prompt.get_by_role("button", name="Close", exact=True)):
            if button.count():
                try:
                    button.first.click(timeout=5_000)
                except Exception:  # the prompt changed under the click; look again
                    pass
                break
        page.wait_for_timeout(250)
    for button in page.locator(NOTIFICATION).get_by_role("button", name="Close notification").all():
        button.click()
    page.locator(NOTIFICATION).first.wait_for(state="detached")


def close_panel(page, name):
    """Closes the panel ``name`` (e.g. "Embeddings") by the close button of its tab."""
    tab = page.locator('[data-cy="panel-tab-%s"]' % name.lower())
    tab.hover()
    tab.locator("xpath=.//*[name()='svg' or self::button][last()]").last.click()
    tab.wait_for(state="detached")


def png_difference(a, b):
    """The fraction of pixels that differ (by more than a little) between two PNG screenshots."""
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return 1.0
    return float((np.abs(x - y).max(axis=-1) > 24).mean())


def stable_screenshot(locator, timeout=20):
    """A screenshot of ``locator`` once two in a row are the same (images and overlays have loaded)."""
    deadline = time.time() + timeout
    last = locator.screenshot()
    while time.time() < deadline:
        locator.page.wait_for_timeout(300)
        shot = locator.screenshot()
        if png_difference(last, shot) == 0.0:
            return shot
        last = shot
    return last
