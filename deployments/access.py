"""Who may do what on the team stack, secure by default.

Every secret is generated at `make stack` and written only to files of mode 600 in
the stack's directory (itself 700); none goes on a command line or into a log:

- MLflow runs its ``basic-auth`` app with ``default_permission = NO_PERMISSIONS``:
  ``admin`` (password only in ``mlflow-auth.ini`` and ``secrets.json``),
  ``pipeline`` (what workers use: it creates the experiments and registered models
  it trains, so it manages them) and ``reader`` (a role with READ on every
  experiment and registered model, present and future);
- Prefect's server wants ``PREFECT_SERVER_API_AUTH_STRING``, clients send
  ``PREFECT_API_AUTH_STRING`` (one credential: the open-source server has no users);
- PostgreSQL authenticates with scram-sha-256: one role per service, each owning
  its own database, no ``trust`` line; each server reads its role's password
  from a pgpass file of its own;
- the S3 store (moto) enforces IAM: keys per identity, each with its own policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

IDENTITIES = ("pipeline", "reader")
PG_ROLES = ("postgres", "mlflow", "prefect")
REGION = "us-east-1"
# moto answers this many requests unsigned, then enforces IAM: enough for the
# stack to create its own admin user, that user's policy and its key
S3_BOOTSTRAP_REQUESTS = 3


def private_file(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable by its owner only, from the first byte."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def token() -> str:
    # url-safe: no quote, colon, percent or space to escape in SQL, ini or URLs
    return secrets.token_urlsafe(24)


@dataclass
class Secrets:
    mlflow: dict[str, str]  # admin, pipeline, reader -> password
    prefect: str  # the API's auth string, "lineageflow:<token>"
    flask: str  # MLflow's session signing key
    pg: dict[str, str]  # role -> password
    s3: dict[str, list[str]] = field(default_factory=dict)  # identity -> [id, secret]

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            mlflow={u: token() for u in ("admin", *IDENTITIES)},
            prefect=f"lineageflow:{token()}",
            flask=token(),
            pg={r: token() for r in PG_ROLES},
        )

    def save(self, base: Path) -> None:
        private_file(base / "secrets.json", json.dumps(asdict(self), indent=2))

    def values(self) -> list[str]:
        """Every secret string: what a leak test searches for."""
        found = [*self.mlflow.values(), self.prefect, self.flask, *self.pg.values()]
        found.append(self.prefect.partition(":")[2])
        return found + [pair[1] for pair in self.s3.values()]

    def s3_env(self, identity: str) -> dict[str, str]:
        key_id, secret = self.s3[identity]
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
        }

    def worker_env(self) -> dict[str, str]:
        """A Dask worker's: it reads the data and a sweep's trials log runs."""
        return self.s3_env("pipeline") | self.mlflow_env("pipeline")

    def mlflow_env(self, user: str) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow[user],
        }


PG_DATABASES = {"postgres": ("*",), "mlflow": ("mlflow", "mlflow_auth")}
PG_DATABASES["prefect"] = ("prefect",)


def pgpass_text(port: int, pg: dict[str, str], role: str) -> str:
    """libpq's and asyncpg's password file for one role: each server gets the
    file of its own role only (the superuser's is the stack's own)."""
    lines = [f"127.0.0.1:{port}:{db}:{role}:{pg[role]}" for db in PG_DATABASES[role]]
    return "\n".join(lines) + "\n"


def roles_sql(pg: dict[str, str]) -> str:
    """One role per service, each owning its databases; nobody else connects."""
    # a failing statement is logged with its text: never with a password in it
    script = ["SET log_min_error_statement = panic;"]
    script.append("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;")
    for role, dbs in (("mlflow", ("mlflow", "mlflow_auth")), ("prefect", ("prefect",))):
        script.append(f"CREATE ROLE {role} LOGIN PASSWORD '{pg[role]}';")
        for db in dbs:
            script.append(f"CREATE DATABASE {db} OWNER {role};")
            script.append(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;")
            script.append(f"GRANT CONNECT ON DATABASE {db} TO {role};")
    return "\n".join(script) + "\n"


def write_auth_ini(path: Path, auth_db_url: str, admin_password: str) -> Path:
    """MLflow's basic-auth config (MLFLOW_AUTH_CONFIG_PATH), mode 600."""
    return private_file(path, mlflow_auth_ini(auth_db_url, admin_password))


def mlflow_auth_ini(auth_db_url: str, admin_password: str) -> str:
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_db_url}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = "
        "mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # a verified password is remembered for 5 minutes: without it every request
        # runs PBKDF2 (MLflow: ~3x the throughput); one server worker, so a change
        # through the API takes effect at once
        "auth_cache_ttl_seconds = 300\n"
    )


@contextlib.contextmanager
def signed_in(env: dict[str, str]) -> Iterator[None]:
    """MLflow's clients read credentials from the environment only."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def create_mlflow_identities(uri: str, sec: Secrets) -> None:
    """`pipeline` and `reader`; the reader role reads every experiment and
    registered model, including those the pipeline creates later."""
    from mlflow.server import get_app_client

    with signed_in(sec.mlflow_env("admin")):
        admin = get_app_client("basic-auth", tracking_uri=uri)
        for user in IDENTITIES:
            admin.create_user(user, sec.mlflow[user])
        role = admin.create_role("default", "reader", "read every run and model")
        for kind in ("experiment", "registered_model"):
            admin.add_role_permission(role.id, kind, "*", "READ")
        admin.assign_role("reader", role.id)


def _policy(*statements: tuple[str, list[str], list[str]]) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": effect, "Action": actions, "Resource": resources}
                for effect, actions, resources in statements
            ],
        }
    )


def s3_policies(bucket: str) -> dict[str, str]:
    """admin: the stack itself; mlflow: the tracking server's artifacts only;
    pipeline: object reads and writes (DVC remotes, tables), never under
    ``mlflow/`` (a worker can neither read nor rewrite a logged model behind the
    server) and nothing on the bucket itself but listing it; reader: get and
    list, not ``mlflow/`` either (artifacts are the server's to serve)."""
    b, objs, ml = (f"arn:aws:s3:::{bucket}{p}" for p in ("", "/*", "/mlflow/*"))
    listing = ["s3:ListBucket", "s3:GetBucketLocation"]
    objects = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    objects += ["s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    return {
        "admin": _policy(("Allow", ["*"], ["*"])),
        "mlflow": _policy(("Allow", listing, [b]), ("Allow", ["s3:*"], [ml])),
        "pipeline": _policy(
            ("Allow", listing, [b]),
            ("Allow", objects, [objs]),
            ("Deny", ["s3:*"], [ml]),
        ),
        "reader": _policy(
            ("Allow", listing, [b]),
            ("Allow", ["s3:GetObject"], [objs]),
            ("Deny", ["s3:*"], [ml]),
        ),
    }


def create_s3_identities(endpoint: str, bucket: str) -> dict[str, list[str]]:
    """Keys per identity on a moto server started with
    ``INITIAL_NO_AUTH_ACTION_COUNT=S3_BOOTSTRAP_REQUESTS``; creates the bucket."""
    import boto3

    def client(service: str, key: tuple[str, str] = ("bootstrap", "bootstrap")):
        return boto3.client(
            service,
            endpoint_url=endpoint,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            region_name=REGION,
        )

    policies = s3_policies(bucket)
    keys: dict[str, list[str]] = {}
    iam = client("iam")
    for name, policy in policies.items():  # admin first: the unsigned requests
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
        made = iam.create_access_key(UserName=name)["AccessKey"]
        keys[name] = [made["AccessKeyId"], made["SecretAccessKey"]]
        if name == "admin":
            iam = client("iam", tuple(keys["admin"]))
    client("s3", tuple(keys["admin"])).create_bucket(Bucket=bucket)
    return keys
