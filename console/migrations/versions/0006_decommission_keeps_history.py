"""a decommissioned device is kept (hidden) so its delivery and alarm history survives

Decommissioning used to delete the device row, and with it, by ON DELETE CASCADE, every
delivery record and fire-point event it ever had. Now the row stays with the time it was
decommissioned, and the two foreign keys no longer cascade: the database itself refuses to
delete a device that history names.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, foreign key name) of the history that names a device.
HISTORY = [
    ('deliveries', 'fk_deliveries_device_id_devices'),
    ('device_events', 'fk_device_events_device_id_devices'),
]


def _device_foreign_keys(ondelete: str | None) -> None:
    for table, name in HISTORY:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_='foreignkey')
            batch.create_foreign_key(name, 'devices', ['device_id'], ['id'], ondelete=ondelete)


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.add_column(
            sa.Column('decommissioned_at', sa.DateTime(timezone=True), nullable=True)
        )
    _device_foreign_keys(None)


def downgrade() -> None:
    _device_foreign_keys('CASCADE')
    with op.batch_alter_table('devices') as batch:
        batch.drop_column('decommissioned_at')
