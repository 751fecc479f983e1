"""audit log, the worker leader lease, a change cursor on devices, the fire-point announcement
rule of a commune, and the repeat count of a broadcast

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_audit_log_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.create_index(op.f('ix_audit_log_action'), 'audit_log', ['action'], unique=False)
    op.create_table('worker_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_leases'))
    )
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f('ix_devices_changed_at'), ['changed_at'], unique=False)
    with op.batch_alter_table('commune_settings') as batch:
        batch.add_column(sa.Column('fire_announce_preset', sa.String(length=32), nullable=True))
    with op.batch_alter_table('broadcasts') as batch:
        batch.add_column(sa.Column('repeat', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('broadcasts') as batch:
        batch.drop_column('repeat')
    with op.batch_alter_table('commune_settings') as batch:
        batch.drop_column('fire_announce_preset')
    with op.batch_alter_table('devices') as batch:
        batch.drop_index(batch.f('ix_devices_changed_at'))
        batch.drop_column('changed_at')
    op.drop_table('worker_leases')
    op.drop_index(op.f('ix_audit_log_action'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_at'), table_name='audit_log')
    op.drop_table('audit_log')
