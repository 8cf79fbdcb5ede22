"""Admin routes: parse the form, check the role, call one service, render or redirect."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    session as cookie_session,
)
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from app.core.errors import Conflict, Invalid, NotFound
from app.core.notifications import mute_route, unmute_route
from app.core.operator import (
    cancel_restart,
    manual_restart,
    pause_automatic,
    record_audit,
    resume_automatic,
)
from app.core.policy_source import LoadedPolicy
from app.core.queries import ExecutionFilters
from app.core.signatures import close_signature as close_signature_of
from app.core.stats import pause_of
from app.core.users import Throttle, end_sessions, sign_in
from app.db import utcnow
from app.extensions import (
    current_policy,
    get_session,
    get_settings,
    policy_source,
    wake_dispatcher,
)
from app.web.admin import pages
from app.web.admin.auth import AdminUser, admin_user, csrf
from app.web.admin.format import human_duration
from app.web.admin.forms import (
    ConfirmForm,
    ExplainForm,
    FilterForm,
    LoginForm,
    LogoutForm,
    MuteForm,
    PauseChoiceForm,
    PauseForm,
    RestartChoiceForm,
    RestartForm,
    errors_text,
)
from app.web.admin.insights import insights_page
from app.web.admin.restart_choice import restart_target
from app.web.errors import Forbidden, Unauthorized
from app.web.proxy import client_address

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
SIGNED_IN_AT = "respawn_signed_in_at"
SEEN_AT = "respawn_seen_at"
SEEN_RESOLUTION = 60.0
"""Seconds between refreshes of a session's last-seen time (each one rewrites the cookie)."""
ACTION_ERRORS = (Conflict, Invalid, NotFound)

# --- access -------------------------------------------------------------------------------


@bp.before_request
def _guard() -> BaseResponse | None:
    if current_user.is_authenticated and request.endpoint != "admin.static":
        ended = _session_ended()
        if ended is not None:
            logout_user()
            cookie_session.clear()
            flash(ended, "info")
            return unauthorized()
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        return unauthorized()
    if request.method == "POST":
        csrf.protect()
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    # The security headers every answer gets are set app-wide (app/web/__init__.py).
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("HX-Request")
        response.vary.add("Cookie")
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    message = (
        f"Nothing was changed: {exc.description} The page may be older than your sign-in, or "
        "the form was sent from another site. Go back, reload the page and try again."
    )
    return render_template("error.html", status=400, message=message), 400


def unauthorized() -> BaseResponse:
    """Where a request without a login goes: the login page, then back (GET only)."""
    if request.headers.get("HX-Request"):
        # A live-refresh request after the session ended: have htmx load the login page.
        response = Response(status=401)
        response.headers["HX-Redirect"] = url_for("admin.login")
        return response
    if request.method != "GET":
        return redirect(url_for("admin.login"))
    return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))


def _user() -> AdminUser:
    user = current_user._get_current_object()
    if not isinstance(user, AdminUser):  # _guard lets no anonymous request this far
        raise Unauthorized("sign in first")
    return user


def _require_operator(what: str) -> AdminUser:
    user = _user()
    if not user.is_operator:
        raise Forbidden(
            f"Only operators can {what}. You are signed in as {user.name}, a viewer; ask an "
            "operator, or an admin to run `respawn user add NAME --role operator`."
        )
    return user


def _loaded_policy() -> LoadedPolicy:
    return current_policy()


def _done_reading(session: Session) -> None:
    """End the read transaction before rendering, so writers are not kept waiting."""
    session.close()


def safe_next(target: str | None) -> str:
    """`target` if it is a path inside the admin UI, else the executions list."""
    default = url_for("admin.executions")
    if not target or len(target) > 2048:
        return default
    if any(c == "\\" or ord(c) < 33 or ord(c) == 127 for c in target):
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    if parts.path != "/admin" and not parts.path.startswith("/admin/"):
        return default
    if parts.path.startswith(url_for("admin.login")):
        return default
    return target


@bp.app_context_processor
def _layout() -> dict[str, Any]:
    return {
        "admin_user": g.get("admin_user"),
        "policy_refused": policy_source().last_error,
        "logout_form": LogoutForm() if g.get("admin_user") else None,
    }


# --- signing in and out -------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm(next=request.args.get("next", ""))
    status = 200
    if form.validate_on_submit():
        session = get_session()
        now = utcnow()
        config = current_app.config
        throttle = Throttle(
            per_address=int(config["ADMIN_LOGIN_MAX_PER_ADDRESS"]),
            per_name=int(config["ADMIN_LOGIN_MAX_PER_NAME"]),
            window=dt.timedelta(seconds=float(config["ADMIN_LOGIN_WINDOW_SECONDS"])),
        )
        result = sign_in(
            session,
            form.name.data.strip(),
            form.password.data,
            client_address(),
            now,
            throttle,
        )
        session.commit()
        if result.user is not None:
            cookie_session.clear()  # a fresh session: nothing from before the login carries over
            login_user(admin_user(result.user))
            cookie_session[SIGNED_IN_AT] = cookie_session[SEEN_AT] = now.timestamp()
            return redirect(safe_next(form.next.data))
        delay = float(config["ADMIN_LOGIN_FAILURE_DELAY"])
        if delay > 0:
            time.sleep(delay)
        if result.wait_seconds:
            status = 429
            # The same words whether the name exists or not.
            flash(
                f"Too many failed sign-ins. Try again in {human_duration(result.wait_seconds)}.",
                "error",
            )
        else:
            flash("Wrong user name or password.", "error")
    elif request.method == "POST":
        status = 400
        flash(errors_text(form), "error")
    form.password.data = ""
    return render_template("admin/login.html", form=form), status


@bp.post("/logout")
def logout() -> BaseResponse:
    user = _user()
    session = get_session()
    end_sessions(session, user.id, utcnow())  # every session of this user, wherever it is
    session.commit()
    logout_user()
    cookie_session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("admin.login"))


def _session_ended() -> str | None:
    """Why the signed-in session is over (idle or too old), or None when it goes on."""
    settings = get_settings()
    now = utcnow().timestamp()
    signed_in = cookie_session.get(SIGNED_IN_AT)
    seen = cookie_session.get(SEEN_AT)
    if not isinstance(signed_in, int | float) or not isinstance(seen, int | float):
        return "Your session has ended. Please sign in again."
    if now - signed_in > settings.session_lifetime:
        return "Your session reached its maximum length. Please sign in again."
    if now - seen > settings.session_idle:
        return "Your session ended after a while without use. Please sign in again."
    if now - seen > SEEN_RESOLUTION:
        cookie_session[SEEN_AT] = now
    return None


# --- pages --------------------------------------------------------------------------------


def _filters(form: FilterForm) -> ExecutionFilters:
    status = form.cleaned("status")
    return ExecutionFilters(
        status=(status,) if status else (),
        account=form.cleaned("account"),
        job=form.cleaned("job"),
        host=form.cleaned("host"),
        pending_restart=bool(form.pending.data),
        search=form.cleaned("q"),
    )


def _list_url(args: dict[str, Any], **changes: Any) -> str:
    """The list URL with the current filters, some changed (None removes one)."""
    merged = {k: v for k, v in args.items() if k != "cursor"}
    merged.update(changes)
    query = urlencode({k: v for k, v in merged.items() if v not in (None, "", False)})
    return url_for("admin.executions") + (f"?{query}" if query else "")


@bp.get("/")
def executions() -> BaseResponse | str | tuple[str, int]:
    form = FilterForm(request.args)
    if not form.validate():
        flash(errors_text(form), "error")
        return redirect(url_for("admin.executions"))
    session = get_session()
    now = utcnow()
    data = pages.execution_list(
        session,
        _loaded_policy().policy,
        _filters(form),
        int(current_app.config["ADMIN_PAGE_SIZE"]),
        form.cleaned("cursor"),
        now,
    )
    _done_reading(session)
    args = {k: v for k, v in request.args.items() if k in form}
    context = {
        "form": form,
        "data": data,
        "args": args,
        "list_url": lambda **changes: _list_url(args, **changes),
        "filtered": any(v for k, v in args.items() if k != "cursor"),
        "refresh": int(current_app.config["ADMIN_REFRESH_SECONDS"]),
        "now": now,
    }
    if request.headers.get("HX-Request"):
        return render_template("admin/_executions.html", **context)
    return render_template("admin/executions.html", **context)


@bp.get("/overview")
def overview() -> str:
    session = get_session()
    data = pages.overview(session, _loaded_policy().policy, utcnow())
    _done_reading(session)
    return render_template("admin/overview.html", data=data, can_act=_user().is_operator)


@bp.get("/executions/<segment:execution_id>")
def execution(execution_id: str) -> str:
    cursor = request.args.get("events") or None
    if cursor is not None and len(cursor) > 512:
        raise Invalid("invalid events cursor")
    session = get_session()
    page = pages.detail_page(session, execution_id, cursor, utcnow(), _loaded_policy().policy)
    _done_reading(session)
    user = _user()
    form = RestartChoiceForm()
    form.offer([h.host for h in page.restart.hosts])
    form.hosts.data = [h.host for h in page.restart.hosts]
    return render_template(
        "admin/execution.html",
        page=page,
        can_act=user.is_operator,
        restart_form=form,
        refresh=int(current_app.config["ADMIN_REFRESH_SECONDS"]),
    )


@bp.get("/policy")
def policy() -> tuple[str, int]:
    form = ExplainForm(request.args)
    session = get_session()
    now = utcnow()
    loaded = _loaded_policy()
    explained = None
    status = 200
    if form.execution_id.data and form.validate():
        try:
            wanted = form.execution_id.data.strip()
            explained = pages.explain(session, loaded.policy, wanted, now)
        except NotFound as exc:
            form.execution_id.errors.append(exc.message)
            status = 404
    data = pages.policy_page(session, loaded, policy_source().last_error, now, explained)
    _done_reading(session)
    can_act = _user().is_operator
    return render_template("admin/policy.html", data=data, form=form, can_act=can_act), status


# --- actions ------------------------------------------------------------------------------


def _detail_url(execution_id: str, anchor: str = "") -> str:
    return url_for("admin.execution", execution_id=execution_id) + (f"#{anchor}" if anchor else "")


@bp.route("/executions/<segment:execution_id>/restart", methods=["GET", "POST"])
def restart(execution_id: str) -> BaseResponse | str | tuple[str, int]:
    user = _require_operator("restart executions")
    session = get_session()
    execution, option = restart_target(session, execution_id, _loaded_policy().policy, utcnow())
    hosts = [h.host for h in option.hosts]
    if request.method == "GET":
        form = RestartChoiceForm(request.args)
        form.offer(hosts)
        if "picked" not in request.args:  # not from the execution page's host list: offer all
            form.hosts.data = hosts
        form.validate()
        _done_reading(session)
        confirm = RestartForm(formdata=None, hosts=form.hosts.data, note=form.note.data)
        confirm.offer(hosts)
        return render_template(
            "admin/confirm_restart.html", execution=execution, option=option, form=confirm
        )
    form = RestartForm()
    form.offer(hosts)
    if not option.allowed:
        flash(option.blocker or "This execution cannot be restarted now.", "error")
        return redirect(_detail_url(execution_id))
    valid = form.validate()
    chosen = list(form.hosts.data or [])
    if valid and hosts and not chosen:
        form.hosts.errors.append("Choose at least one host.")
        valid = False
    if not valid:
        _done_reading(session)
        page = render_template(
            "admin/confirm_restart.html", execution=execution, option=option, form=form
        )
        return page, 422
    try:
        stored = manual_restart(
            session,
            execution_id,
            chosen,
            user.name,
            utcnow(),
            _loaded_policy().policy,
            form.note.data.strip() or None,
        )
    except ACTION_ERRORS as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(_detail_url(execution_id))
    session.commit()
    wake_dispatcher()
    what = ", ".join(stored.decision.hosts) if stored.decision.hosts else "no host list"
    flash(f"Restart queued ({what}). The dispatcher sends it to the Runner next.", "success")
    return redirect(_detail_url(execution_id, "restarts"))


@bp.route("/restarts/<row_id:restart_id>/cancel", methods=["GET", "POST"])
def cancel(restart_id: int) -> BaseResponse | str:
    user = _require_operator("cancel restarts")
    session = get_session()
    target = pages.cancel_target(session, restart_id)
    execution_id = target.execution.execution_id
    if request.method == "GET":
        _done_reading(session)
        return render_template("admin/confirm_cancel.html", target=target, form=ConfirmForm())
    try:
        cancel_restart(session, restart_id, user.name, utcnow())
    except ACTION_ERRORS as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(_detail_url(execution_id, "restarts"))
    session.commit()
    flash(f"Restart {restart_id} cancelled; it will not be sent.", "success")
    return redirect(_detail_url(execution_id, "restarts"))


@bp.route("/signatures/<segment:key>/close", methods=["GET", "POST"])
def close_signature(key: str) -> BaseResponse | str:
    user = _require_operator("close error signatures")
    session = get_session()
    policy = _loaded_policy().policy
    now = utcnow()
    view = pages.signature(session, policy, key, now)
    if request.method == "GET":
        _done_reading(session)
        return render_template("admin/confirm_close_signature.html", view=view, form=ConfirmForm())
    try:
        _, released = close_signature_of(session, key, user.name, now, policy)
    except ACTION_ERRORS as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("admin.overview") + "#signatures")
    session.commit()
    wake_dispatcher()
    flash(
        f"Signature closed: {released.released} held restart"
        f"{'' if released.released == 1 else 's'} released, {released.dropped} dropped.",
        "success",
    )
    return redirect(url_for("admin.overview") + "#signatures")


@bp.get("/notifications")
def notifications() -> str:
    session = get_session()
    data = pages.notifications_page(session, _loaded_policy().policy, utcnow())
    _done_reading(session)
    return render_template(
        "admin/notifications.html", data=data, form=MuteForm(), can_act=_user().is_operator
    )


@bp.get("/insights")
def insights() -> str:
    page = request.args.get("page", default=1, type=int) or 1
    session = get_session()
    data = insights_page(session, _loaded_policy().policy, utcnow(), max(1, min(page, 10_000)))
    _done_reading(session)
    return render_template("admin/insights.html", data=data)


@bp.post("/notifications/mute")
def mute() -> BaseResponse:
    user = _require_operator("mute notification routes")
    form = MuteForm()
    if not form.validate():
        raise Invalid(errors_text(form))
    session = get_session()
    now = utcnow()
    route = form.route.data
    hours = int(form.hours.data)
    if hours:
        mute_route(session, route, now + dt.timedelta(hours=hours), user.name, now)
        record_audit(session, user.name, "mute", f"route {route}", now, {"hours": hours})
        message = f"Route {route} muted for {hours} hour{'' if hours == 1 else 's'}."
    else:
        unmute_route(session, route)
        record_audit(session, user.name, "unmute", f"route {route}", now)
        message = f"Route {route} unmuted."
    session.commit()
    flash(message, "success")
    return redirect(url_for("admin.notifications") + "#routes")


def _pause_scope(job: str | None) -> str:
    return f"job {job}" if job else "every job"


@bp.route("/pause", methods=["GET", "POST"])
def pause() -> BaseResponse | str | tuple[str, int]:
    return _pause_action(pausing=True)


@bp.route("/resume", methods=["GET", "POST"])
def resume() -> BaseResponse | str | tuple[str, int]:
    return _pause_action(pausing=False)


def _pause_action(pausing: bool) -> BaseResponse | str | tuple[str, int]:
    verb = "pause" if pausing else "resume"
    user = _require_operator(f"{verb} automatic restarts")
    session = get_session()
    if request.method == "GET":
        form = PauseChoiceForm(request.args)
        if not form.validate():
            raise Invalid(errors_text(form))
        job = form.job.data or None
        existing = pause_of(session, job)
        _done_reading(session)
        confirm = PauseForm(formdata=None, job=job or "", next=form.next.data)
        return render_template(
            "admin/confirm_pause.html",
            form=confirm,
            pausing=pausing,
            job=job,
            existing=existing,
            back=safe_next(form.next.data),
        )
    form = PauseForm()
    if not form.validate():
        raise Invalid(errors_text(form))
    job = (form.job.data or "").strip() or None
    now = utcnow()
    if pausing:
        already = pause_of(session, job)
        pause_automatic(
            session,
            job,
            user.name,
            now,
            (form.reason.data or "").strip() or None,
            _loaded_policy().policy,
        )
        message = (
            f"Automatic restarts were already paused for {_pause_scope(job)}."
            if already
            else f"Automatic restarts paused for {_pause_scope(job)}. Manual restarts still work."
        )
    else:
        resumed = resume_automatic(session, job, user.name, now, _loaded_policy().policy)
        message = (
            f"Automatic restarts resumed for {_pause_scope(job)}."
            if resumed
            else f"Automatic restarts were not paused for {_pause_scope(job)}."
        )
    session.commit()
    flash(message, "success")
    return redirect(safe_next(form.next.data))
