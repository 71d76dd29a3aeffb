"""What the routes of one `cau serve` share: the service, the access store, the worker, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cau.service import Service
from cau.store.access import AccessStore
from cau.views import ClusterScan
from cau.web.client_address import IPNetwork
from cau.web.device_cookie import DeviceCookies
from cau.web.metrics import Metrics
from cau.web.throttle import SignInThrottle
from cau.web.worker import RunWorker


@dataclass
class Settings:
    secure_cookies: bool = False  # set when served over https (--ssl-*) or behind a TLS proxy
    session_hours: float = 12.0
    # A simulated cluster's scripts run on the server's own host: off unless its operator says so.
    allow_local_scripts: bool = False
    # Reverse proxies whose X-Forwarded-For is believed (cau.web.client_address); none by default.
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass
class WebContext:
    svc: Service
    access: AccessStore
    worker: RunWorker
    metrics: Metrics
    settings: Settings
    throttle: SignInThrottle
    devices: DeviceCookies
    # The last preview per cluster: the "pending updates" column of the cluster page.
    scans: dict[str, ClusterScan] = field(default_factory=dict)
    shutting_down: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
