"""emergency presets and retained device configs

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Bumped by whoever changes what a device's retained config holds; polled by the worker.
CONFIG_REVISION_KEY = 'config.revision'


def upgrade() -> None:

    op.create_table('presets',
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('audio_sha256', sa.String(length=64), nullable=False),
    sa.Column('updated_by', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['audio_sha256'], ['audio_files.sha256'], name=op.f('fk_presets_audio_sha256_audio_files')),
    sa.ForeignKeyConstraint(['updated_by'], ['users.id'], name=op.f('fk_presets_updated_by_users')),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_presets'))
    )
    with op.batch_alter_table('presets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_presets_audio_sha256'), ['audio_sha256'], unique=False)

    op.create_table('device_configs',
    sa.Column('device_id', sa.String(length=63), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('published_version', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_configs'))
    )

    worker_state = sa.table('worker_state', sa.column('key', sa.String), sa.column('value', sa.Text))
    op.bulk_insert(worker_state, [{'key': CONFIG_REVISION_KEY, 'value': '0'}])


def downgrade() -> None:

    op.execute(sa.text("DELETE FROM worker_state WHERE key = 'config.revision'"))
    op.drop_table('device_configs')
    with op.batch_alter_table('presets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_presets_audio_sha256'))

    op.drop_table('presets')
