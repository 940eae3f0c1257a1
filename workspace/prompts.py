"""The prompts a task's rows become, shared by training (finetune) and evaluation (evals), so a held-out row
is asked exactly as the training rows were."""

from __future__ import annotations

SQL_PROMPT = "다음 데이터베이스 스키마를 보고 질문에 답하는 SQLite 쿼리를 작성하세요.\n\n{context}\n\n질문: {question}"
QA_PROMPT = "다음 글을 읽고 질문에 대한 답을 글에서 찾아 짧게 쓰세요.\n\n{context}\n\n질문: {question}"
RAFT_PROMPT = "다음 문서들을 참고하여 질문에 답하세요.\n\n{documents}\n\n질문: {question}"


def alpaca_user_message(instruction: str, input: str = "") -> str:
    """The user turn for an instruction row; the same text in training, in evaluation and in chat."""
    instruction = instruction.strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction
