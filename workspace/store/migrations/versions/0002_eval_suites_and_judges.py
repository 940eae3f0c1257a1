"""eval suites of every task: prediction details and token counts, score tokenizers, judge runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=20), server_default='generate', nullable=False))
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('prompt_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('details', sa.JSON(), nullable=True))
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokenizer', sa.String(length=80), nullable=True))
    with op.batch_alter_table('call_cache', schema=None) as batch_op:
        batch_op.add_column(sa.Column('meta', sa.JSON(), nullable=True))
    op.create_table('judge_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('suite', sa.String(length=200), nullable=False),
    sa.Column('suite_hash', sa.String(length=64), nullable=False),
    sa.Column('judge_name', sa.String(length=200), nullable=False),
    sa.Column('judge_digest', sa.String(length=80), nullable=False),
    sa.Column('eval_run_a_id', sa.Integer(), nullable=False),
    sa.Column('eval_run_b_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['eval_run_a_id'], ['eval_runs.id'], name=op.f('fk_judge_runs_eval_run_a_id_eval_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['eval_run_b_id'], ['eval_runs.id'], name=op.f('fk_judge_runs_eval_run_b_id_eval_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judge_runs'))
    )
    op.create_table('judgments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('judge_run_id', sa.Integer(), nullable=False),
    sa.Column('example_id', sa.String(length=200), nullable=False),
    sa.Column('order', sa.String(length=10), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('parsed_by', sa.String(length=20), nullable=True),
    sa.Column('cached', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['judge_run_id'], ['judge_runs.id'], name=op.f('fk_judgments_judge_run_id_judge_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgments')),
    sa.UniqueConstraint('judge_run_id', 'example_id', 'order', name=op.f('uq_judgments_judge_run_id'))
    )


def downgrade() -> None:
    op.drop_table('judgments')
    op.drop_table('judge_runs')
    with op.batch_alter_table('call_cache', schema=None) as batch_op:
        batch_op.drop_column('meta')
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.drop_column('tokenizer')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('details')
        batch_op.drop_column('prompt_tokens')
        batch_op.drop_column('tokens')
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.drop_column('source')
