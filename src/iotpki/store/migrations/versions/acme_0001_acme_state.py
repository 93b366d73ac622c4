"""ACME state: EAB credentials, accounts, orders, authorizations, challenges, ARI overrides.

Revision ID: acme_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "acme_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_eab",
        sa.Column("key_id", sa.String(length=64), primary_key=True),
        sa.Column("hmac_key", sa.LargeBinary(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("device_profile", sa.String(length=64), nullable=False),
        sa.Column("device_patterns", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("used_by", sa.String(length=32), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("account_id", sa.String(length=32), primary_key=True),
        sa.Column("thumbprint", sa.String(length=64), nullable=False, unique=True),
        sa.Column("jwk", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("contacts", sa.Text(), nullable=False),
        sa.Column("terms_agreed", sa.Boolean(), nullable=False),
        sa.Column("eab_key_id", sa.String(length=64), nullable=True),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("device_profile", sa.String(length=64), nullable=False),
        sa.Column("device_patterns", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "acme_orders",
        sa.Column("order_id", sa.String(length=32), primary_key=True),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("certificate_serial", sa.String(length=64), nullable=True),
        sa.Column("certificate_ca", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("replaces", sa.String(length=256), nullable=True),
    )
    op.create_index("ix_acme_orders_account_id", "acme_orders", ["account_id"])
    op.create_index("ix_acme_orders_replaces", "acme_orders", ["replaces"])
    op.create_index(
        "ix_acme_orders_certificate", "acme_orders", ["certificate_ca", "certificate_serial"]
    )
    op.create_table(
        "acme_authorizations",
        sa.Column("authz_id", sa.String(length=32), primary_key=True),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("identifier_type", sa.String(length=32), nullable=False),
        sa.Column("identifier_value", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_acme_authorizations_order_id", "acme_authorizations", ["order_id"])
    op.create_index(
        "ix_acme_authz_account_identifier",
        "acme_authorizations",
        ["account_id", "identifier_value"],
    )
    op.create_table(
        "acme_challenges",
        sa.Column("challenge_id", sa.String(length=32), primary_key=True),
        sa.Column("authz_id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("validated_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_acme_challenges_authz_id", "acme_challenges", ["authz_id"])
    op.create_index("ix_acme_challenges_status", "acme_challenges", ["status"])
    op.create_table(
        "acme_renewal_overrides",
        sa.Column("override_id", sa.String(length=32), primary_key=True),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("ca_name", sa.String(length=64), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("issued_before", sa.DateTime(), nullable=True),
        sa.Column("explanation_url", sa.String(length=512), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "acme_renewal_overrides",
        "acme_challenges",
        "acme_authorizations",
        "acme_orders",
        "acme_accounts",
        "acme_eab",
    ):
        op.drop_table(table)
