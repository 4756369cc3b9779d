"""The desk's web app: login, the one-product-at-a-time desk, the admin page, product photos.

Every route needs a logged-in user except the login page and /static. Pages redirect anonymous
visitors to /login; /api/* and /image/* answer 401. Every POST checks the session's CSRF token
(form field csrf_token or header X-CSRF-Token). Photos are looked up by product id in the queue
and served from the path the catalogue gave; nothing in the URL ever becomes a file path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.middleware.sessions import SessionMiddleware

from prodcat.desk import auth, review, stats
from prodcat.desk.db import Database, QueueItem, User
from prodcat.desk.queue import queue_model, taxonomy

HERE = Path(__file__).parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
SESSION_HOURS = 12


class LoginRequiredError(Exception):
    pass


class AnswerIn(BaseModel):
    product_id: str
    category: str
    new_category: bool = False


class ProductIn(BaseModel):
    product_id: str


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def current_user(request: Request) -> User:
    uid = request.session.get("uid")
    if uid is None:
        raise LoginRequiredError()
    with _db(request).session() as s:
        user = s.get(User, int(uid))
    if user is None or request.session.get("stamp") != auth.stamp(user):
        request.session.clear()
        raise LoginRequiredError()
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(403, "the admin page is for admins")
    return user


async def csrf(request: Request) -> None:
    sent = request.headers.get("x-csrf-token")
    if sent is None and "form" in request.headers.get("content-type", ""):
        sent = str((await request.form()).get("csrf_token") or "") or None
    if not auth.csrf_ok(request.session, sent):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")


UserDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(admin_user)]
CsrfDep = Depends(csrf)


def create_app(db: Database) -> FastAPI:
    app = FastAPI(title="prodcat review desk", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = db
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.add_middleware(
        SessionMiddleware,
        secret_key=db.secret_key(),
        session_cookie="prodcat_desk",
        max_age=SESSION_HOURS * 3600,
        same_site="lax",
        https_only=False,
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response

    @app.exception_handler(LoginRequiredError)
    async def _login_required(request: Request, _exc: LoginRequiredError) -> Response:
        path = request.url.path
        if path.startswith(("/api/", "/image/")):
            return JSONResponse({"detail": "log in first"}, status_code=401)
        return RedirectResponse(f"/login?next={quote(path)}", status_code=303)

    # -- login ----------------------------------------------------------------------------
    @app.get("/login")
    def login_page(request: Request, next: str = "/desk") -> Response:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"csrf": auth.csrf_token(request.session), "next": _local(next), "error": ""},
        )

    @app.post("/login", dependencies=[CsrfDep])
    def login(
        request: Request,
        name: Annotated[str, Form()],
        password: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/desk",
    ) -> Response:
        user = auth.authenticate(db, name, password)
        if user is None:
            return templates.TemplateResponse(
                request,
                "login.html",
                {
                    "csrf": auth.csrf_token(request.session),
                    "next": _local(next),
                    "error": "wrong name or password",
                },
                status_code=401,
            )
        request.session.clear()  # a fresh session (and CSRF token) at every login
        request.session.update({"uid": user.id, "stamp": auth.stamp(user)})
        auth.csrf_token(request.session)
        return RedirectResponse(_local(next), status_code=303)

    @app.post("/logout", dependencies=[CsrfDep])
    def logout(request: Request, _user: UserDep) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- the desk -------------------------------------------------------------------------
    @app.get("/")
    def home(_user: UserDep) -> Response:
        return RedirectResponse("/desk", status_code=303)

    @app.get("/desk")
    def desk(request: Request, user: UserDep) -> Response:
        return templates.TemplateResponse(
            request,
            "desk.html",
            {
                "user": user,
                "csrf": auth.csrf_token(request.session),
                "model": queue_model(db),
                # inside <script type="application/json">: no "<" may end the element early,
                # whatever a reviewer typed as a new category name
                "taxonomy_json": json.dumps(taxonomy(db)).replace("<", "\\u003c"),
            },
        )

    @app.get("/api/next")
    def api_next(user: UserDep) -> dict[str, Any]:
        task = review.next_task(db, user)
        return {"task": task.as_dict() if task else None, **stats.left_for_desk(db, user.name)}

    @app.post("/api/answer", dependencies=[CsrfDep])
    def api_answer(body: AnswerIn, user: UserDep) -> dict[str, Any]:
        try:
            saved = review.answer(
                db, user, body.product_id, body.category, new_category=body.new_category
            )
        except review.ReviewError as exc:
            raise HTTPException(409, str(exc)) from None
        return {
            "saved": saved.id,
            "product_id": saved.product_id,
            "category": saved.category,
            "agreed": saved.agreed,
        }

    @app.post("/api/skip", dependencies=[CsrfDep])
    def api_skip(body: ProductIn, user: UserDep) -> dict[str, Any]:
        try:
            review.skip(db, user, body.product_id)
        except review.ReviewError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"skipped": body.product_id}

    @app.post("/api/undo", dependencies=[CsrfDep])
    def api_undo(user: UserDep) -> dict[str, Any]:
        task = review.undo(db, user)
        return {"task": task.as_dict() if task else None}

    @app.get("/image/{product_id}")
    def image(product_id: str, _user: UserDep) -> Response:
        with db.session() as s:
            item = s.get(QueueItem, product_id)
        path = Path(item.image_path) if item and item.image_path else None
        if path is None or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            raise HTTPException(404, f"product {product_id!r} has no photo in the queue")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/image/{product_id}/neighbour/{k}")
    def neighbour_image(product_id: str, k: int, _user: UserDep) -> Response:
        """The photo of the k-th training product near a queued one: the path comes from the
        reasons `prodcat queue` stored, never from the URL."""
        with db.session() as s:
            item = s.get(QueueItem, product_id)
        path = neighbour_photo(item.explanation_json if item else None, k)
        if path is None or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            raise HTTPException(404, f"product {product_id!r} has no neighbour photo {k}")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    # -- admin ----------------------------------------------------------------------------
    @app.get("/admin")
    def admin(request: Request, user: AdminDep) -> Response:
        with db.session() as s:
            lease = review.lease_minutes(s)
        return templates.TemplateResponse(
            request,
            "admin.html",
            {
                "user": user,
                "csrf": auth.csrf_token(request.session),
                "model": queue_model(db),
                "p": stats.progress(db),
                "lease_minutes": lease,
            },
        )

    @app.get("/api/progress")
    def api_progress(_user: AdminDep) -> dict[str, Any]:
        return stats.progress(db)

    @app.post("/admin/settings", dependencies=[CsrfDep])
    def admin_settings(
        _user: AdminDep,
        answers_per_product: Annotated[int, Form()],
        lease_minutes: Annotated[float, Form()],
    ) -> Response:
        try:
            review.set_answers_per_product(db, answers_per_product)
            review.set_lease_minutes(db, lease_minutes)
        except review.ReviewError as exc:
            raise HTTPException(422, str(exc)) from None
        return RedirectResponse("/admin", status_code=303)

    return app


def neighbour_photo(explanation_json: str | None, k: int) -> Path | None:
    """The photo path of the k-th neighbour in a queued product's stored reasons, if any."""
    if not explanation_json:
        return None
    neighbours = json.loads(explanation_json).get("neighbours", [])
    photo = neighbours[k].get("photo") if 0 <= k < len(neighbours) else None
    return Path(photo) if photo else None


def _local(url: str) -> str:
    """Only same-site paths after login: no open redirect to another host."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/desk"


def serve(url: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    db = Database(url)
    uvicorn.run(create_app(db), host=host, port=port, log_level="warning")
