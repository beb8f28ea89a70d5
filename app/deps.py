"""Typed dependencies: routes ask for the Service built in the lifespan, never for globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
