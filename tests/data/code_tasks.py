"""A code-task set for the ``code`` verifier: 44 tasks, both reference formats.

Each task has a correct solution (score 1), a wrong one (the exact partial score it
deserves), and most have a slow one (``timeout``) and/or a reward-hacking one (score 0, or
no more than an honest constant answer would get). Completions are wrapped the way a model
writes them (think block, then a fenced block, sometimes several, sometimes none).

    TASKS: list[dict(id, reference, solutions=[(kind, completion, expected_score), ...])]
"""

from __future__ import annotations


def fenced(code: str, think: str = "Let me solve it step by step.") -> str:
    return f"<think>{think}</think>\nHere is my solution:\n```python\n{code.strip()}\n```\n"


def stdio(*pairs: tuple[str, str], **extra) -> dict:
    return {"tests": [{"stdin": i, "stdout": o} for i, o in pairs], **extra}


def func(test_code: str, entry_point: str) -> dict:
    return {"test_code": test_code, "entry_point": entry_point}


SPIN = "while True:\n    pass\n"

# ---------------------------------------------------------------- stdio hacks (generic)
FAKE_PASS = fenced("print('All tests passed!')\nprint('OK')\nimport sys\nsys.exit(0)")
SILENT_EXIT = fenced("import sys\nsys.exit(0)")
SNOOP = fenced(
    "import os\nfor d in ['/work', '/', '/tmp', '..']:\n    print(d, sorted(os.listdir(d)))\n"
    "for f in ['expected.txt', 'expected_output', '/work/tests.json']:\n"
    "    try:\n        print(open(f).read())\n    except OSError:\n        pass\n"
    "print(dict(os.environ))"
)
ECHO = fenced("import sys\nsys.stdout.write(sys.stdin.read())")
KILL_GRADER = fenced("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint(3)")

# ------------------------------------------------------------- function hacks (generic)
EXIT_AT_IMPORT = "import sys\nsys.exit(0)\n"
OS_EXIT_IN_CALL = "import os\ndef {f}(*args, **kwargs):\n    os._exit(0)\n"
ALWAYS_EQUAL = (
    "class _Anything:\n"
    "    def __eq__(self, other): return True\n"
    "    def __ne__(self, other): return False\n"
    "    def __lt__(self, other): return True\n"
    "    def __gt__(self, other): return True\n"
    "    def __sub__(self, other): return 0\n"
    "    def __rsub__(self, other): return 0\n"
    "    def __abs__(self): return 0\n"
    "    def __bool__(self): return True\n"
    "    def __iter__(self): return iter(())\n"
    "    def __len__(self): return 0\n"
    "    def __hash__(self): return 0\n"
    "def {f}(*args, **kwargs):\n    return _Anything()\n"
)
FORGE_REPORT = (
    "import json, os\n"
    "spec = json.load(open('harness.json'))\n"
    "n = sum(1 for kind, _ in spec['steps'] if kind == 'case')\n"
    "os.write(1, f\"\\n{{spec['nonce']}} load {{json.dumps({{'end': 'ok'}})}}\\n\".encode())\n"
    "for i in range(n):\n"
    "    fake = {{'calls': [['s', 'PASSED']], 'end': 'ok'}}\n"
    "    os.write(1, f\"\\n{{spec['nonce']}} {{i}} {{json.dumps(fake)}}\\n\".encode())\n"
    "os._exit(0)\n"
    "def {f}(*args):\n    return None\n"
)
READ_EXPECTED = (
    "import json, re\n"
    "_text = open('harness.json').read()\n"
    "_nums = [int(x) for x in re.findall(r'-?\\d+', _text)]\n"
    "def {f}(*args, **kwargs):\n"
    "    return _nums[-1] if _nums else None\n"
)
PATCH_HARNESS = (
    "import __main__, builtins\n"
    "__main__.encode = lambda value, depth=0: ['b', True]\n"
    "builtins.AssertionError = type('Nope', (Exception,), {{}})\n"
    "builtins.abs = lambda x: 0\n"
    "builtins.isinstance = lambda *a: True\n"
    "def {f}(*args, **kwargs):\n    return -12345\n"
)
RAISE_SYSTEMEXIT = "def {f}(*args, **kwargs):\n    raise SystemExit(0)\n"


def hack(template: str, f: str) -> str:
    return fenced(template.format(f=f))


TASKS: list[dict] = []


def task(id: str, reference: dict, *solutions: tuple[str, str, float]) -> None:
    TASKS.append({"id": id, "reference": reference, "solutions": list(solutions)})


# ==================================================================== stdin/stdout: 22
task(
    "sum_two",
    stdio(("1 2\n", "3\n"), ("-5 5\n", "0\n"), ("100 23\n", "123\n")),
    ("correct", fenced("a, b = map(int, input().split())\nprint(a + b)"), 1.0),
    ("wrong", fenced("a, b = map(int, input().split())\nprint(abs(a) + b)"), 2 / 3),
    ("hack", FAKE_PASS, 0.0),
    ("slow", fenced(SPIN), 0.0),
)
task(
    "reverse_string",
    stdio(("hello\n", "olleh\n"), ("abba\n", "abba\n"), ("xy z\n", "z yx\n")),
    ("correct", fenced("print(input()[::-1])"), 1.0),
    ("wrong", fenced("print(input())"), 1 / 3),
    ("hack", ECHO, 1 / 3),  # echoing the input is as good as the wrong answer, no better
)
task(
    "count_vowels",
    stdio(("banana\n", "3\n"), ("rhythm\n", "0\n"), ("AEIOUxyz\n", "5\n")),
    ("correct", fenced("print(sum(c in 'aeiouAEIOU' for c in input()))"), 1.0),
    ("wrong", fenced("print(sum(c in 'aeiou' for c in input()))"), 2 / 3),
    ("hack", SILENT_EXIT, 0.0),
)
task(
    "max_of_list",
    stdio(("3\n1 5 2\n", "5\n"), ("1\n-7\n", "-7\n"), ("4\n-1 -2 -3 -4\n", "-1\n")),
    ("correct", fenced("input()\nprint(max(map(int, input().split())))"), 1.0),
    ("wrong", fenced("input()\nprint(max(0, *map(int, input().split())))"), 1 / 3),
    ("slow", fenced("import time\ninput()\ntime.sleep(30)"), 0.0),
)
task(
    "fizzbuzz",
    stdio(
        ("5\n", "1\n2\nFizz\n4\nBuzz\n"),
        ("1\n", "1\n"),
        (
            "15\n",
            "\n".join(
                "FizzBuzz"
                if i % 15 == 0
                else "Fizz"
                if i % 3 == 0
                else "Buzz"
                if i % 5 == 0
                else str(i)
                for i in range(1, 16)
            )
            + "\n",
        ),
    ),
    (
        "correct",
        fenced(
            "for i in range(1, int(input()) + 1):\n"
            "    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)"
        ),
        1.0,
    ),
    (
        "wrong",
        fenced(
            "for i in range(1, int(input()) + 1):\n"
            "    print('Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)"
        ),
        2 / 3,
    ),
    ("hack", SNOOP, 0.0),
)
task(
    "factorial_big",
    stdio(("5\n", "120\n"), ("0\n", "1\n"), ("30\n", "265252859812191058636308480000000\n")),
    ("correct", fenced("import math\nprint(math.factorial(int(input())))"), 1.0),
    (
        "wrong",
        fenced("n = int(input())\nr = 1\nfor i in range(2, n):\n    r *= i\nprint(r)"),
        1 / 3,
    ),
    ("slow", fenced("n = int(input())\nwhile n >= 0:\n    n += 1"), 0.0),
)
task(
    "is_prime",
    stdio(("7\n", "YES\n"), ("1\n", "NO\n"), ("91\n", "NO\n"), ("97\n", "YES\n")),
    (
        "correct",
        fenced(
            "n = int(input())\nprint('YES' if n > 1 and all(n % d for d in range(2, int(n**0.5) + 1)) else 'NO')"
        ),
        1.0,
    ),
    ("wrong", fenced("n = int(input())\nprint('YES' if n % 2 == 1 else 'NO')"), 0.5),
    ("hack", KILL_GRADER, 0.0),
)
task(
    "gcd",
    stdio(("12 18\n", "6\n"), ("7 13\n", "1\n"), ("0 9\n", "9\n")),
    (
        "correct",
        fenced("import math\na, b = map(int, input().split())\nprint(math.gcd(a, b))"),
        1.0,
    ),
    ("wrong", fenced("a, b = map(int, input().split())\nprint(min(a, b))"), 0.0),
    ("slow", fenced("a, b = map(int, input().split())\nwhile a != b:\n    a = a - 0"), 0.0),
)
task(
    "fibonacci",
    stdio(("0\n", "0\n"), ("10\n", "55\n"), ("90\n", "2880067194370816120\n")),
    (
        "correct",
        fenced("a, b = 0, 1\nfor _ in range(int(input())):\n    a, b = b, a + b\nprint(a)"),
        1.0,
    ),
    (
        "wrong",
        fenced("a, b = 1, 1\nfor _ in range(int(input())):\n    a, b = b, a + b\nprint(a)"),
        0.0,
    ),
    # Correct but exponential: fast on small n, times out on n = 90.
    (
        "slow",
        fenced(
            "import sys\nsys.setrecursionlimit(10000)\n"
            "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\nprint(f(int(input())))"
        ),
        2 / 3,
    ),
)
task(
    "sort_numbers",
    stdio(("3 1 2\n", "1 2 3\n"), ("5\n", "5\n"), ("-1 10 -20\n", "-20 -1 10\n")),
    ("correct", fenced("print(*sorted(map(int, input().split())))"), 1.0),
    ("wrong", fenced("print(*sorted(input().split()))"), 2 / 3),
    ("hack", FAKE_PASS, 0.0),
)
task(
    "word_count",
    stdio(("the quick brown fox\n", "4\n"), ("   spaced   out   \n", "2\n"), ("one\n", "1\n")),
    ("correct", fenced("print(len(input().split()))"), 1.0),
    ("wrong", fenced("print(input().count(' ') + 1)"), 2 / 3),
)
task(
    "palindrome",
    stdio(("racecar\n", "true\n"), ("Abba\n", "true\n"), ("abc\n", "false\n")),
    (
        "correct",
        fenced("s = input().strip().lower()\nprint('true' if s == s[::-1] else 'false')"),
        1.0,
    ),
    ("wrong", fenced("s = input().strip()\nprint('true' if s == s[::-1] else 'false')"), 2 / 3),
    ("hack", SILENT_EXIT, 0.0),
)
task(
    "digit_sum",
    stdio(("123\n", "6\n"), ("0\n", "0\n"), ("99999\n", "45\n")),
    ("correct", fenced("print(sum(map(int, input().strip())))"), 1.0),
    ("wrong", fenced("print(len(input().strip()))"), 0.0),
    ("slow", fenced("import time\ntime.sleep(100)"), 0.0),
)
task(
    "to_binary",
    stdio(("5\n", "101\n"), ("0\n", "0\n"), ("255\n", "11111111\n")),
    ("correct", fenced("print(bin(int(input()))[2:])"), 1.0),
    ("wrong", fenced("print(bin(int(input())))"), 0.0),
)
task(
    "mean_float_tol",
    stdio(("1 2\n", "1.5\n"), ("1 2 2\n", "1.6666667\n"), ("10\n", "10.0\n"), float_tol=1e-6),
    ("correct", fenced("xs = list(map(float, input().split()))\nprint(sum(xs) / len(xs))"), 1.0),
    ("wrong", fenced("xs = list(map(int, input().split()))\nprint(sum(xs) // len(xs))"), 1 / 3),
    ("hack", SNOOP, 0.0),
)
task(
    "transpose",
    stdio(("2 3\n1 2 3\n4 5 6\n", "1 4\n2 5\n3 6\n"), ("1 1\n7\n", "7\n")),
    (
        "correct",
        fenced(
            "r, c = map(int, input().split())\nm = [input().split() for _ in range(r)]\n"
            "for row in zip(*m):\n    print(*row)"
        ),
        1.0,
    ),
    (
        "wrong",
        fenced(
            "r, c = map(int, input().split())\nm = [input().split() for _ in range(r)]\n"
            "for row in m:\n    print(*row)"
        ),
        0.5,
    ),
    ("slow", fenced(SPIN), 0.0),
)
task(
    "count_distinct",
    stdio(("1 2 2 3\n", "3\n"), ("5 5 5\n", "1\n"), ("\n", "0\n")),
    ("correct", fenced("print(len(set(input().split())))"), 1.0),
    ("wrong", fenced("print(len(input().split()))"), 1 / 3),
    ("hack", ECHO, 0.0),
)
task(
    "second_largest",
    stdio(("1 5 3\n", "3\n"), ("4 4 2\n", "2\n"), ("9 8\n", "8\n")),
    ("correct", fenced("print(sorted(set(map(int, input().split())))[-2])"), 1.0),
    ("wrong", fenced("print(sorted(map(int, input().split()))[-2])"), 2 / 3),
)
task(
    "caesar",
    stdio(("3\nabc\n", "def\n"), ("1\nxyz\n", "yza\n"), ("13\nhello\n", "uryyb\n")),
    (
        "correct",
        fenced(
            "k = int(input())\nprint(''.join(chr((ord(c) - 97 + k) % 26 + 97) for c in input().strip()))"
        ),
        1.0,
    ),
    (
        "wrong",
        fenced("k = int(input())\nprint(''.join(chr(ord(c) + k) for c in input().strip()))"),
        1 / 3,
    ),
    ("hack", KILL_GRADER, 0.0),
)
task(
    "anagram",
    stdio(("listen silent\n", "YES\n"), ("abc abd\n", "NO\n"), ("aab abb\n", "NO\n")),
    (
        "correct",
        fenced("a, b = input().split()\nprint('YES' if sorted(a) == sorted(b) else 'NO')"),
        1.0,
    ),
    ("wrong", fenced("a, b = input().split()\nprint('YES' if set(a) == set(b) else 'NO')"), 2 / 3),
    ("slow", fenced("import time\nwhile True:\n    time.sleep(0.01)"), 0.0),
)
task(
    "running_sum",
    stdio(("1 2 3\n", "1 3 6\n"), ("5\n", "5\n"), ("-1 1 -1\n", "-1 0 -1\n")),
    # No fences: the answer text itself is the program.
    (
        "correct",
        "<think>accumulate</think>\nimport itertools\nprint(*itertools.accumulate(map(int, input().split())))",
        1.0,
    ),
    ("wrong", fenced("print(*map(int, input().split()))"), 1 / 3),
    ("hack", FAKE_PASS, 0.0),
)
task(
    "circle_area",
    stdio(("1\n", "3.14159265\n"), ("2.5\n", "19.63495408\n"), float_tol=1e-6),
    # Two blocks: the last one counts.
    (
        "correct",
        "<think>area</think>\n```python\nprint(0)\n```\nFixed:\n```python\n"
        "import math\nprint(math.pi * float(input()) ** 2)\n```",
        1.0,
    ),
    ("wrong", fenced("print(3.14 * float(input()) ** 2)"), 0.0),
    ("slow", fenced(SPIN), 0.0),
)

# ================================================================ function tests: 22
# HumanEval style: module-level setup, then check(candidate).
task(
    "he_add",
    func(
        "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
        "    assert candidate(10, 5) == 15\n    assert candidate(0, 0) == 0\n",
        "add",
    ),
    ("correct", fenced("def add(a, b):\n    return a + b"), 1.0),
    ("wrong", fenced("def add(a, b):\n    return a * b"), 0.25),  # 0 * 0 == 0 + 0
    ("hack", hack(ALWAYS_EQUAL, "add"), 0.0),
    ("slow", fenced("def add(a, b):\n" + "    while True:\n        pass\n"), 0.0),
)
task(
    "he_has_close_elements",
    func(
        "METADATA = {'author': 'jt'}\n\n"
        "def check(candidate):\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
        "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n"
        "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False\n",
        "has_close_elements",
    ),
    (
        "correct",
        fenced(
            "def has_close_elements(numbers, threshold):\n"
            "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])"
        ),
        1.0,
    ),
    ("wrong", fenced("def has_close_elements(numbers, threshold):\n    return True"), 0.5),
    ("hack", hack(EXIT_AT_IMPORT + "def has_close_elements(n, t):\n    return True\n", "x"), 0.0),
)
task(
    "he_truncate_number",
    func(
        "def check(candidate):\n    assert candidate(3.5) == 0.5\n"
        "    assert abs(candidate(1.33) - 0.33) < 1e-6\n    assert abs(candidate(123.456) - 0.456) < 1e-6\n",
        "truncate_number",
    ),
    ("correct", fenced("def truncate_number(number):\n    return number % 1.0"), 1.0),
    ("wrong", fenced("def truncate_number(number):\n    return round(number % 1.0, 1)"), 1 / 3),
    # Patching abs() and AssertionError in its own process changes nothing: the asserts
    # run in the parent or in a replay run without the program.
    ("hack", hack(PATCH_HARNESS, "truncate_number"), 0.0),
)
task(
    "he_below_zero",
    func(
        "def check(candidate):\n    assert candidate([]) == False\n    assert candidate([1, 2, -3, 1, 2, -3]) == False\n"
        "    assert candidate([1, 2, -4, 5, 6]) == True\n    assert candidate([1, -1, 2, -2, 5, -5, 4, -4]) == False\n"
        "    assert candidate([1, -2, 2, -2, 5, -5, 4, -4]) == True\n",
        "below_zero",
    ),
    (
        "correct",
        fenced(
            "def below_zero(operations):\n    b = 0\n    for op in operations:\n        b += op\n"
            "        if b < 0:\n            return True\n    return False"
        ),
        1.0,
    ),
    ("wrong", fenced("def below_zero(operations):\n    return sum(operations) < 0"), 0.8),
    ("hack", hack(OS_EXIT_IN_CALL, "below_zero"), 0.0),
)
task(
    "he_mean_absolute_deviation",
    func(
        "def check(candidate):\n    assert abs(candidate([1.0, 2.0, 3.0]) - 2.0/3.0) < 1e-6\n"
        "    assert abs(candidate([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6\n"
        "    assert abs(candidate([1.0, 2.0, 3.0, 4.0, 5.0]) - 6.0/5.0) < 1e-6\n",
        "mean_absolute_deviation",
    ),
    (
        "correct",
        fenced(
            "def mean_absolute_deviation(numbers):\n    m = sum(numbers) / len(numbers)\n"
            "    return sum(abs(x - m) for x in numbers) / len(numbers)"
        ),
        1.0,
    ),
    (
        "wrong",
        fenced(
            "def mean_absolute_deviation(numbers):\n    m = sum(numbers) / len(numbers)\n"
            "    return sum(abs(x - m) for x in numbers) / (len(numbers) - 1)"
        ),
        0.0,
    ),
    ("hack", hack(ALWAYS_EQUAL, "mean_absolute_deviation"), 0.0),
    ("slow", fenced("import time\ndef mean_absolute_deviation(numbers):\n    time.sleep(30)"), 0.0),
)
task(
    "he_intersperse",
    func(
        "def check(candidate):\n    assert candidate([], 7) == []\n    assert candidate([5, 6, 3, 2], 8) == [5, 8, 6, 8, 3, 8, 2]\n"
        "    assert candidate([2, 2, 2], 2) == [2, 2, 2, 2, 2]\n",
        "intersperse",
    ),
    (
        "correct",
        fenced(
            "def intersperse(numbers, delimeter):\n    out = []\n    for i, n in enumerate(numbers):\n"
            "        if i:\n            out.append(delimeter)\n        out.append(n)\n    return out"
        ),
        1.0,
    ),
    ("wrong", fenced("def intersperse(numbers, delimeter):\n    return numbers"), 1 / 3),
    ("hack", hack(FORGE_REPORT, "intersperse"), 0.0),
)
task(
    "he_count_upper_loop",
    # A loop: recorded and replayed call by call.
    func(
        "def check(candidate):\n    for s, n in [('aBCdEf', 3), ('abc', 0), ('ABC', 3), ('', 0)]:\n"
        "        assert candidate(s) == n\n    assert candidate('Hello World') == 2\n",
        "count_upper",
    ),
    ("correct", fenced("def count_upper(s):\n    return sum(c.isupper() for c in s)"), 1.0),
    ("wrong", fenced("def count_upper(s):\n    return sum(c.islower() for c in s)"), 0.0),
    ("hack", hack(ALWAYS_EQUAL, "count_upper"), 0.0),
)
task(
    "he_strlen_with_helper",
    # The expected values come from a helper defined by the test: judged by the replay run.
    func(
        "def _ref(s):\n    return len(s)\n\ndef check(candidate):\n"
        "    for s in ['', 'x', 'asdasnakj']:\n        assert candidate(s) == _ref(s)\n"
        "    assert candidate('abc') == _ref('abc')\n",
        "strlen",
    ),
    ("correct", fenced("def strlen(string):\n    return len(string)"), 1.0),
    ("wrong", fenced("def strlen(string):\n    return len(string.strip('x'))"), 0.5),
    ("slow", fenced(f"def strlen(string):\n    {SPIN.replace(chr(10), chr(10) + '    ')}"), 0.0),
)
task(
    "he_fib",
    func(
        "def check(candidate):\n    assert candidate(10) == 55\n    assert candidate(1) == 1\n"
        "    assert candidate(8) == 21\n    assert candidate(11) == 89\n    assert candidate(12) == 144\n",
        "fib",
    ),
    (
        "correct",
        fenced(
            "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"
        ),
        1.0,
    ),
    ("wrong", fenced("def fib(n):\n    return n"), 0.2),
    ("hack", hack(READ_EXPECTED, "fib"), 0.0),
    ("slow", fenced("import time\ndef fib(n):\n    time.sleep(30)\n    return 0"), 0.0),
)
task(
    "he_unique",
    func(
        "def check(candidate):\n    assert candidate([5, 3, 5, 2, 3, 3, 9, 0, 123]) == [0, 2, 3, 5, 9, 123]\n"
        "    assert candidate([]) == []\n    assert candidate([1, 1]) == [1]\n",
        "unique",
    ),
    ("correct", fenced("def unique(l):\n    return sorted(set(l))"), 1.0),
    ("wrong", fenced("def unique(l):\n    return sorted(l)"), 1 / 3),
    ("hack", hack(RAISE_SYSTEMEXIT, "unique"), 0.0),
)
task(
    "he_sum_squares_isclose",
    func(
        "import math\n\ndef check(candidate):\n    assert math.isclose(candidate([1, 2, 3]), 14)\n"
        "    assert math.isclose(candidate([0.5]), 0.25)\n    assert candidate([]) == 0\n",
        "sum_squares",
    ),
    ("correct", fenced("def sum_squares(lst):\n    return sum(x * x for x in lst)"), 1.0),
    ("wrong", fenced("def sum_squares(lst):\n    return sum(lst) ** 2"), 2 / 3),
    ("hack", hack(PATCH_HARNESS, "sum_squares"), 0.0),
)
# MBPP style: top-level asserts naming the function.
task(
    "mbpp_remove_occ",
    func(
        "assert remove_Occ('hello', 'l') == 'heo'\nassert remove_Occ('abcda', 'a') == 'bcd'\n"
        "assert remove_Occ('PHP', 'P') == 'H'\n",
        "remove_Occ",
    ),
    (
        "correct",
        fenced(
            "def remove_Occ(s, ch):\n    i = s.find(ch)\n    if i != -1:\n        s = s[:i] + s[i + 1:]\n"
            "    j = s.rfind(ch)\n    if j != -1:\n        s = s[:j] + s[j + 1:]\n    return s"
        ),
        1.0,
    ),
    ("wrong", fenced("def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)"), 0.0),
    ("hack", hack(OS_EXIT_IN_CALL, "remove_Occ"), 0.0),
)
task(
    "mbpp_square_nums",
    func(
        "assert square_nums([1, 2, 3]) == [1, 4, 9]\nassert square_nums([10, 20]) == [100, 400]\n"
        "assert square_nums([]) == []\n",
        "square_nums",
    ),
    ("correct", fenced("def square_nums(nums):\n    return [n * n for n in nums]"), 1.0),
    ("wrong", fenced("def square_nums(nums):\n    return [n * 2 for n in nums]"), 1 / 3),
    ("slow", fenced("def square_nums(nums):\n    while nums:\n        pass\n    return []"), 0.0),
)
task(
    "mbpp_is_not_prime",
    func(
        "assert is_not_prime(2) == False\nassert is_not_prime(10) == True\n"
        "assert is_not_prime(35) == True\nassert is_not_prime(37) == False\n",
        "is_not_prime",
    ),
    (
        "correct",
        fenced(
            "def is_not_prime(n):\n    return n < 2 or any(n % d == 0 for d in range(2, int(n ** 0.5) + 1))"
        ),
        1.0,
    ),
    ("wrong", fenced("def is_not_prime(n):\n    return n % 2 == 0"), 0.5),
    # Forged report lines carry guesses, not knowledge: no better than a constant answer.
    ("hack", hack(FORGE_REPORT, "is_not_prime"), 0.0),
)
task(
    "mbpp_long_words",
    func(
        "assert find_char_long('Please move back to stream') == ['Please', 'move', 'back', 'stream']\n"
        "assert find_char_long('Jing Eco and Tech') == ['Jing', 'Tech']\n",
        "find_char_long",
    ),
    (
        "correct",
        fenced("def find_char_long(text):\n    return [w for w in text.split() if len(w) >= 4]"),
        1.0,
    ),
    (
        "wrong",
        fenced("def find_char_long(text):\n    return [w for w in text.split() if len(w) > 4]"),
        0.0,
    ),
    ("hack", hack(ALWAYS_EQUAL, "find_char_long"), 0.0),
)
task(
    "mbpp_similar_elements_set",
    func(
        "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))\n"
        "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))\n"
        "assert set(similar_elements((11, 12, 14, 13), (17, 15, 14, 13))) == set((13, 14))\n",
        "similar_elements",
    ),
    ("correct", fenced("def similar_elements(a, b):\n    return tuple(set(a) & set(b))"), 1.0),
    ("wrong", fenced("def similar_elements(a, b):\n    return tuple(set(a) | set(b))"), 0.0),
    ("hack", hack(ALWAYS_EQUAL, "similar_elements"), 0.0),
    ("slow", fenced("import time\ndef similar_elements(a, b):\n    time.sleep(10)"), 0.0),
)
task(
    "mbpp_area_isclose",
    func(
        "import math\nassert math.isclose(circle_area(2), 12.566370614359172, rel_tol=0.001)\n"
        "assert math.isclose(circle_area(1), 3.141592653589793, rel_tol=0.001)\n",
        "circle_area",
    ),
    ("correct", fenced("import math\ndef circle_area(r):\n    return math.pi * r * r"), 1.0),
    ("wrong", fenced("def circle_area(r):\n    return 3 * r * r"), 0.0),
    ("hack", hack(PATCH_HARNESS.replace("-12345", "float('nan')"), "circle_area"), 0.0),
)
task(
    "mbpp_heap_largest",
    func(
        "assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 3) == [85, 75, 65]\n"
        "assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 2) == [85, 75]\n",
        "heap_queue_largest",
    ),
    (
        "correct",
        fenced(
            "import heapq\ndef heap_queue_largest(nums, n):\n    return heapq.nlargest(n, nums)"
        ),
        1.0,
    ),
    ("wrong", fenced("def heap_queue_largest(nums, n):\n    return sorted(nums)[:n]"), 0.0),
    ("hack", hack(READ_EXPECTED, "heap_queue_largest"), 0.0),
)
task(
    "mbpp_lowercase_underscore",
    func(
        "assert text_lowercase_underscore('aab_cbbbc') == True\n"
        "assert text_lowercase_underscore('aab_Abbbc') == False\n"
        "assert text_lowercase_underscore('Aaab_abbbc') == False\n",
        "text_lowercase_underscore",
    ),
    (
        "correct",
        fenced(
            "import re\ndef text_lowercase_underscore(text):\n    return bool(re.fullmatch(r'[a-z]+_[a-z]+', text))"
        ),
        1.0,
    ),
    ("wrong", fenced("def text_lowercase_underscore(text):\n    return '_' in text"), 1 / 3),
    ("hack", hack(RAISE_SYSTEMEXIT, "text_lowercase_underscore"), 0.0),
)
task(
    "mbpp_square_perimeter",
    func(
        "assert square_perimeter(10) == 40\nassert square_perimeter(5) == 20\nassert square_perimeter(4) == 16\n",
        "square_perimeter",
    ),
    ("correct", fenced("def square_perimeter(a):\n    return 4 * a"), 1.0),
    ("wrong", fenced("def square_perimeter(a):\n    return a * a"), 1 / 3),
    ("hack", hack(READ_EXPECTED, "square_perimeter"), 0.0),
    (
        "slow",
        fenced(f"def square_perimeter(a):\n    {SPIN.replace(chr(10), chr(10) + '    ')}"),
        0.0,
    ),
)
task(
    "mbpp_remove_dirty_chars",
    func(
        "assert remove_dirty_chars('probasscurve', 'pros') == 'bacuve'\n"
        "assert remove_dirty_chars('digitalindia', 'talent') == 'digiidi'\n"
        "assert remove_dirty_chars('exoticmiles', 'toxic') == 'emles'\n",
        "remove_dirty_chars",
    ),
    (
        "correct",
        fenced("def remove_dirty_chars(s, d):\n    return ''.join(c for c in s if c not in d)"),
        1.0,
    ),
    ("wrong", fenced("def remove_dirty_chars(s, d):\n    return s"), 0.0),
    ("hack", hack(EXIT_AT_IMPORT + "def remove_dirty_chars(s, d):\n    return s\n", "x"), 0.0),
)
task(
    "mbpp_min_cost_block",
    # A statement block: the call's result is bound first, then asserted on.
    func(
        "r = min_of_three(10, 20, 0)\nassert r == 0\nr = min_of_three(19, 15, 18)\nassert r == 15\n",
        "min_of_three",
    ),
    ("correct", fenced("def min_of_three(a, b, c):\n    return min(a, b, c)"), 1.0),
    ("wrong", fenced("def min_of_three(a, b, c):\n    return a"), 0.0),
    ("hack", hack(ALWAYS_EQUAL, "min_of_three"), 0.0),
)
