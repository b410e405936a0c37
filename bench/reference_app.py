"""The benchmark's reference: the request path of fastapi/full-stack-fastapi-template's backend, for four routes.

Issue 6 states its performance targets as ratios to that template's backend (FastAPI + sync SQLModel + PostgreSQL
+ PyJWT). This module re-creates, for `./dev bench`, what the template does per request on the routes the bench
compares: it is written for this bench, not the template's own code, and it is never part of the service.

- `GET /api/v1/utils/health-check/`: an `async def` route answering `true` (no database, no auth).
- The template's other routes before these (login, users, test e-mail), in its order: they cost every request that
  passes them on the way to its route, and answer 501 (the bench never calls them).
- `GET /api/v1/items/{id}`, `GET /api/v1/items/` and `POST /api/v1/items/`: plain `def` routes behind the
  template's dependency chain: `get_db` (a sync generator: `with Session(engine)`), the OAuth2 bearer scheme, and
  `get_current_user` (sync: PyJWT decode, `TokenPayload` validation, `session.get(User, sub)`, active check). The
  routes load ORM objects and return them for FastAPI to validate against the response model.

Configuration comes from the environment: `REFERENCE_DATABASE_URL` (a `postgresql+psycopg://` URL, psycopg 3 like
the template) and `REFERENCE_SECRET_KEY` (the HS256 key). Serve it with
`python -m uvicorn --app-dir bench reference_app:app`. `python bench/reference_app.py seed` creates the tables
(`SQLModel.metadata.create_all`: benchmark code; the service itself only ever migrates) and the bench's users and
items, and prints them with their tokens as one JSON object.
"""

import json
import os
import sys
import uuid
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from jwt.exceptions import InvalidTokenError
from pydantic import EmailStr, ValidationError
from sqlmodel import Field, Relationship, Session, SQLModel, create_engine, func, select
from starlette.middleware.cors import CORSMiddleware

API_V1_STR = "/api/v1"
ALGORITHM = "HS256"
ACCESS_TOKEN_EXPIRE_MINUTES = 60 * 24 * 8  # the template's default: eight days
SECRET_KEY = os.environ.get("REFERENCE_SECRET_KEY", "")
# The template's default .env allows the local frontend's origins, so its CORS middleware is on.
CORS_ORIGINS = ["http://localhost", "http://localhost:5173", "https://localhost", "https://localhost:5173"]

# SQLAlchemy's defaults, as the template creates its engine (QueuePool of 5 + 10 overflow, no pre-ping).
# create_engine does not connect: importing this module without the variable only fails on the first query.
engine = create_engine(os.environ.get("REFERENCE_DATABASE_URL", "postgresql+psycopg:///reference_unset"))


# ---------------------------------------------------------------------------------------------- models


class UserBase(SQLModel):
    email: EmailStr = Field(unique=True, index=True, max_length=255)
    is_active: bool = True
    is_superuser: bool = False
    full_name: str | None = Field(default=None, max_length=255)


class User(UserBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    hashed_password: str
    items: list["Item"] = Relationship(back_populates="owner", cascade_delete=True)


class ItemBase(SQLModel):
    title: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=255)


class ItemCreate(ItemBase):
    pass


class Item(ItemBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    title: str = Field(max_length=255)
    owner_id: uuid.UUID = Field(foreign_key="user.id", nullable=False, ondelete="CASCADE")
    owner: User | None = Relationship(back_populates="items")


class ItemPublic(ItemBase):
    id: uuid.UUID
    owner_id: uuid.UUID


class ItemsPublic(SQLModel):
    data: list[ItemPublic]
    count: int


class TokenPayload(SQLModel):
    sub: str | None = None


# ---------------------------------------------------------------------------------------------- dependencies


def get_db() -> Generator[Session, None, None]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
bearer_scheme = OAuth2PasswordBearer(tokenUrl=f"{API_V1_STR}/login/access-token")
TokenDep = Annotated[str, Depends(bearer_scheme)]


def get_current_user(session: SessionDep, token: TokenDep) -> User:
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        token_data = TokenPayload(**payload)
    except (InvalidTokenError, ValidationError) as exc:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Could not validate credentials") from exc
    user = session.get(User, token_data.sub)
    if user is None:
        raise HTTPException(status_code=404, detail="User not found")
    if not user.is_active:
        raise HTTPException(status_code=400, detail="Inactive user")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


# ---------------------------------------------------------------------------------------------- routes

login_router = APIRouter(tags=["login"])
users_router = APIRouter(prefix="/users", tags=["users"])
utils_router = APIRouter(prefix="/utils", tags=["utils"])
items_router = APIRouter(prefix="/items", tags=["items"])


# The template's login and user routes, and its test-email route, come before the items (and health) in its router,
# and FastAPI tries every route in order: each one a request passes costs it CPU. They are here, in the template's
# order and with its methods and paths, for that cost alone; the bench never calls them, and they answer 501.
def _not_modelled() -> None:
    raise HTTPException(status_code=status.HTTP_501_NOT_IMPLEMENTED, detail="Not part of the benchmark's model")


for _method, _path in [
    ("POST", "/login/access-token"),
    ("POST", "/login/test-token"),
    ("POST", "/password-recovery/{email}"),
    ("POST", "/reset-password/"),
    ("POST", "/password-recovery-html-content/{email}"),
]:
    login_router.add_api_route(_path, _not_modelled, methods=[_method])
for _method, _path in [
    ("GET", "/"),
    ("POST", "/"),
    ("PATCH", "/me"),
    ("PATCH", "/me/password"),
    ("GET", "/me"),
    ("DELETE", "/me"),
    ("POST", "/signup"),
    ("GET", "/{user_id}"),
    ("PATCH", "/{user_id}"),
    ("DELETE", "/{user_id}"),
]:
    users_router.add_api_route(_path, _not_modelled, methods=[_method])
utils_router.add_api_route("/test-email/", _not_modelled, methods=["POST"])


@utils_router.get("/health-check/")
async def health_check() -> bool:
    return True


@items_router.get("/", response_model=ItemsPublic)
def read_items(session: SessionDep, current_user: CurrentUser, skip: int = 0, limit: int = 100) -> Any:
    if current_user.is_superuser:
        count = session.exec(select(func.count()).select_from(Item)).one()
        items = session.exec(select(Item).offset(skip).limit(limit)).all()
    else:
        owned = Item.owner_id == current_user.id
        count = session.exec(select(func.count()).select_from(Item).where(owned)).one()
        items = session.exec(select(Item).where(owned).offset(skip).limit(limit)).all()
    # The ORM rows are validated from their attributes, as the template does (so its types do not say so).
    return ItemsPublic(data=items, count=count)  # type: ignore[arg-type]


@items_router.get("/{id}", response_model=ItemPublic)
def read_item(session: SessionDep, current_user: CurrentUser, id: uuid.UUID) -> Any:
    item = session.get(Item, id)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    if not current_user.is_superuser and item.owner_id != current_user.id:
        raise HTTPException(status_code=400, detail="Not enough permissions")
    return item


@items_router.post("/", response_model=ItemPublic)
def create_item(*, session: SessionDep, current_user: CurrentUser, item_in: ItemCreate) -> Any:
    item = Item.model_validate(item_in, update={"owner_id": current_user.id})
    session.add(item)
    session.commit()
    session.refresh(item)
    return item


api_router = APIRouter()
api_router.include_router(login_router)
api_router.include_router(users_router)
api_router.include_router(utils_router)
api_router.include_router(items_router)

app = FastAPI(title="reference: full-stack-fastapi-template request path", openapi_url=f"{API_V1_STR}/openapi.json")
app.add_middleware(
    CORSMiddleware, allow_origins=CORS_ORIGINS, allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
)
app.include_router(api_router, prefix=API_V1_STR)


# ---------------------------------------------------------------------------------------------- seeding


def create_access_token(subject: uuid.UUID) -> str:
    """A token as the template's login issues it: `exp` and `sub` only, HS256."""
    expire = datetime.now(UTC) + timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)
    return jwt.encode({"exp": expire, "sub": str(subject)}, SECRET_KEY, algorithm=ALGORITHM)


def seed(items: int = 100) -> dict[str, str]:
    """Tables, a reader with `items` items (get, list) and a writer (create), without a login route."""
    if not SECRET_KEY:
        raise SystemExit("reference_app: REFERENCE_SECRET_KEY is not set")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        # The password hash is never checked: the bench has no login route for the reference.
        reader = User(email="reader@example.com", full_name="Bench reader", hashed_password="-")
        writer = User(email="writer@example.com", full_name="Bench writer", hashed_password="-")
        session.add_all([reader, writer])
        session.flush()
        rows = [Item(title=f"Item {number}", description="x" * 80, owner_id=reader.id) for number in range(items)]
        session.add_all(rows)
        session.commit()
        return {
            "reader_token": create_access_token(reader.id),
            "item_id": str(rows[len(rows) // 2].id),
            "writer_token": create_access_token(writer.id),
        }


if __name__ == "__main__":
    if sys.argv[1:] != ["seed"]:
        raise SystemExit(
            "usage: REFERENCE_DATABASE_URL=... REFERENCE_SECRET_KEY=... python bench/reference_app.py seed"
        )
    print(json.dumps(seed()))
    engine.dispose()
