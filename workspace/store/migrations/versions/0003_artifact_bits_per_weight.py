"""artifacts: bits per weight of a GGUF (file bytes x 8 / parameters)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bits_per_weight', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('bits_per_weight')
