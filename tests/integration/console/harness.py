"""A console served in the test process (its own thread and event loop), and a headless Chromium to drive it."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline.console import store
from pipeline.console.ingest import Consumer
from pipeline.console.publish import Publisher
from pipeline.console.web import make_app, open_console
from pipeline.settings import Settings
from tests.integration.workers import free_ports

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class ConsoleServer:
    """``python -m pipeline console`` without the process: consumer, publisher and web app on a free port."""

    def __init__(self, settings: Settings, store_path: Path, users: Path) -> None:
        self.console = open_console(store_path, users)
        self.consumer = Consumer(store.connect(store_path), settings)
        self.console.consumer = self.consumer
        self.console.publisher = Publisher(settings)
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(make_app(self.console))
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ConsoleServer:
        self.consumer.start()
        self._thread.start()
        assert self._ready.wait(30), "the console's web server started"
        return self

    def stop(self) -> None:
        self.consumer.stop()
        if self._ready.is_set():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        if self._thread.is_alive():  # a test that failed before ``start`` must show its own error
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        if self.console.publisher is not None:
            self.console.publisher.close()


def chromium() -> Any:
    """A headless Chromium under Selenium, from Debian's packages (no driver download: there is no network)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def full_page_screenshot(driver: Any, path: Path, max_height: int = 2400) -> None:
    """A screenshot of the whole page (up to ``max_height`` pixels), not just the window."""
    height = min(max_height, int(driver.execute_script("return document.documentElement.scrollHeight")))
    driver.set_window_size(1300, max(height, 700))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(1300, 1000)
