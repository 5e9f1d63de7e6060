"""A ReAct-style tool loop as one Autellix program: think -> act (a local tool) -> observe -> repeat.

The model is asked to answer with `CALL calculator: <expression>` or `ANSWER: <text>`; tool results go
back into the conversation. Small models follow the format loosely, so the loop stops after --steps.
Streaming is used for the model's turns to show that streamed calls are tagged the same way.

    autellix serve
    python examples/react_tools.py [--base-url http://127.0.0.1:8000/v1] [--steps 4]
"""

from __future__ import annotations

import argparse
import ast
import operator
import re

from openai import OpenAI

from autellix.client import Program

SYSTEM = ("Solve the task. To compute, reply exactly `CALL calculator: <expression>`. "
          "When done, reply `ANSWER: <answer>`.")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculator(expression: str) -> str:
    """Evaluate + - * / on numbers only (no eval of arbitrary code)."""
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("unsupported expression")
    try:
        return str(walk(ast.parse(expression, mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--task", default="What is 17 * 23 + 4?")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": args.task}]
    with Program(client) as program:
        for step in range(args.steps):
            stream = program.chat.completions.create(model=model, messages=messages, max_tokens=40,
                                                     stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
            print(f"[step {step}] model: {text}")
            messages.append({"role": "assistant", "content": text})
            if "ANSWER:" in text:
                break
            call = re.search(r"CALL calculator:\s*(.+)", text)
            observation = calculator(call.group(1).strip()) if call else calculator(
                re.sub(r"[^0-9+\-*/(). ]", "", args.task).strip() or "0")
            print(f"[step {step}] tool: {observation}")
            messages.append({"role": "user", "content": f"Observation: {observation}"})
        print(f"program {program.id}: {program.status()['completed_calls']} calls")


if __name__ == "__main__":
    main()
