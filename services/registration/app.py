"""registration's composition root: the service declaration with its handlers."""

from __future__ import annotations

from contracts import registration as api
from services.registration import bulk, requests
from services.registration.handlers import create_indexes, router
from services.registration.store import OUTBOX_COLLECTIONS
from services.runtime.service import Service

service = Service(
    "registration",
    description="Product models, installed base, registered devices, warranty, bulk Excel registration (CATALOG §3).",
    outbox_collections=OUTBOX_COLLECTIONS,
    emits=[api.ModelsUpdated, api.DeviceProvisioned, api.DeviceRegisteredEvent, api.DeviceUpdated,
           api.DeviceDeregistered, api.DeviceClaimed, api.RequestDecided, api.BulkUploadCompleted],
    routers=[router, bulk.router, requests.router],
)
service.on_startup(create_indexes)
service.on_startup(bulk.create_indexes)
service.background(bulk.process_uploads)
