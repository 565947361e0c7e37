#!/usr/bin/env python3
"""Writes the tokenizer test corpus: one JSON string (a document) per line, UTF-8, deterministic for a
given machine and seed (file lists are sorted; all randomness comes from one seeded generator).

The mix is chosen to exercise every branch of the DeepSeek-V3 pre-tokenizer and the added-token matcher:
English prose (licenses and docs installed under /usr/share), Python source (the stdlib under
/usr/lib/python3*) re-indented with tabs and converted to CRLF in part, generated Chinese / Japanese /
Korean / Arabic / Cyrillic / Greek / Devanagari / Thai text, digit runs in many scripts, emoji with ZWJ,
skin tones, flags and keycaps, combining-mark stacks, long and exotic whitespace runs, embedded special
tokens (and near misses), and random code points from every plane.

Usage: make-tokenizer-corpus.py OUT.jsonl [--mb 6] [--seed 1234]
"""
import argparse
import glob
import gzip
import json
import os
import random

SPECIAL_TOKENS = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
    "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>", "<｜place▁holder▁no▁0｜>",
    "<｜place▁holder▁no▁17｜>", "<｜place▁holder▁no▁799｜>",
]
NEAR_MISSES = ["<｜end▁of▁sentence", "<|end▁of▁sentence|>", "<｜fim_hole｜>", "<｜User|>", "<｜", "｜>",
               "<｜place▁holder▁no▁9999｜>", "<<｜User｜>>", "<｜<｜fim▁hole｜>", "<｜Assistant｜"]

ZH_WORDS = ("我们 你好 世界 中国 北京 上海 学习 工作 今天 明天 天气 很好 语言 模型 训练 推理 数据 计算 机器 "
            "人工 智能 深度 研究 开发 程序 代码 测试 问题 答案 时间 朋友 电脑 手机 网络 经济 文化 历史 科学 "
            "技术 发展 社会 国家 政府 人民 生活 城市 学生 老师 医院 银行 公司 市场 价格 质量 服务").split()
ZH_PUNCT = ["，", "。", "、", "；", "：", "？", "！", "“", "”", "（", "）", "《", "》", "……", "——"]
JA_WORDS = ("わたし こんにちは ありがとう ございます 日本語 東京 大阪 コンピューター プログラム データ "
            "ネットワーク テスト カタカナ ひらがな 漢字 勉強 します でした ですか ヴァイオリン ゠ ・ ー "
            "ゝ ゞ ヽ ヾ ゟ ヿ 〇 々 ㋐ ｶﾀｶﾅ").split()
KO_WORDS = ("안녕하세요 감사합니다 한국어 서울 부산 컴퓨터 프로그램 데이터 네트워크 시험 학교 선생님 "
            "사람 오늘 내일 날씨 좋아요 사랑 음식 김치").split()
AR_WORDS = ("مرحبا السلام عليكم العربية اللغة الكتاب المدرسة الحاسوب البرنامج البيانات الشبكة "
            "مُحَمَّد كِتَابٌ الْعَرَبِيَّةُ شُكْرًا").split()
RU_WORDS = "привет мир язык модель данные обучение ёлка Москва Россия быстро медленно".split()
EL_WORDS = "γειά σου κόσμε γλώσσα μοντέλο δεδομένα Ελλάδα Αθήνα".split()
HI_WORDS = "नमस्ते दुनिया भाषा मॉडल डेटा प्रशिक्षण भारत दिल्ली".split()
TH_WORDS = "สวัสดี ภาษาไทย กรุงเทพ ข้อมูล คอมพิวเตอร์ ขอบคุณ".split()
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏽", "👩🏿‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇨🇳", "🇯🇵", "🇺🇸", "❤️", "❤", "✨",
         "🔥", "1️⃣", "#️⃣", "🧑‍🚀", "👁️‍🗨️", "🤷‍♀️", "©️", "™", "🀄", "🎉", "\u200d", "\ufe0f"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u20e3", "\u0488", "\u093f", "\u0e31", "\u1ab0", "\u1dc0"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u200b", "\u2028", "\u0085",
          "\x0b", "\x0c", " \n", "\n\n", "\t\t"]
DIGIT_SETS = ["0123456789", "０１２３４５６７８９", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "¹²³⁴⁵⁶⁷⁸⁹⁰", "ⅠⅡⅢⅣⅤⅫ",
              "①②③④⑤", "〇一二三四五六七八九"]


def read_text(path, limit=200_000):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def chunks(text, rng, lo=800, hi=6000):
    """Cuts text into documents of lo..hi characters (at arbitrary positions, on purpose)."""
    i = 0
    while i < len(text):
        n = rng.randint(lo, hi)
        yield text[i:i + n]
        i += n


def english_docs(rng, budget):
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    files += sorted(glob.glob("/usr/share/doc/*/copyright"))[:400]
    files += sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz"))[:150]
    files += sorted(glob.glob("/usr/share/doc/*/README*"))[:100]
    out, size = [], 0
    for p in files:
        t = read_text(p)
        if not t:
            continue
        for d in chunks(t, rng):
            out.append(d)
            size += len(d.encode())
            if size >= budget:
                return out
    return out


def code_docs(rng, budget):
    files = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    rng.shuffle(files)
    out, size = [], 0
    for p in files:
        t = read_text(p, 60_000)
        if not t:
            continue
        r = rng.random()
        if r < 0.25:  # tab indentation
            t = "\n".join(("\t" * ((len(l) - len(l.lstrip(" "))) // 4)) + l.lstrip(" ") for l in t.split("\n"))
        elif r < 0.45:  # Windows line endings
            t = t.replace("\n", "\r\n")
        elif r < 0.55:  # trailing whitespace and long blank runs
            t = "\n".join(l + " " * rng.randint(0, 9) for l in t.split("\n"))
            t = t.replace("\n\n", "\n" + " " * rng.randint(1, 40) + "\n\n" + "\t" * rng.randint(0, 5) + "\n")
        for d in chunks(t, rng, 500, 5000):
            out.append(d)
            size += len(d.encode())
            if size >= budget:
                return out
    return out


def random_char(rng):
    """A random Unicode scalar value, biased towards assigned BMP blocks but reaching every plane."""
    r = rng.random()
    if r < 0.5:
        c = rng.randint(0x20, 0x2FFF)
    elif r < 0.7:
        c = rng.randint(0x3000, 0xFFFF)
    elif r < 0.9:
        c = rng.randint(0x10000, 0x2FFFF)
    else:
        c = rng.randint(0x30000, 0x10FFFF)
    if 0xD800 <= c <= 0xDFFF:
        c = 0xFFFD
    return chr(c)


def number(rng):
    digits = rng.choice(DIGIT_SETS)
    n = rng.choice([1, 2, 3, 4, 5, 6, 7, 9, 12, 20])
    s = "".join(rng.choice(digits) for _ in range(n))
    sep = rng.choice(["", "", ".", ",", " ", "-", ":", "/", "e", "x", "%"])
    if sep and rng.random() < 0.5:
        s += sep + "".join(rng.choice(digits) for _ in range(rng.randint(1, 5)))
    return s


def word(rng):
    r = rng.random()
    if r < 0.22:
        return rng.choice(ZH_WORDS) + (rng.choice(ZH_PUNCT) if rng.random() < 0.3 else "")
    if r < 0.34:
        return rng.choice(JA_WORDS)
    if r < 0.44:
        return rng.choice(KO_WORDS)
    if r < 0.52:
        return rng.choice(AR_WORDS)
    if r < 0.57:
        return rng.choice(RU_WORDS)
    if r < 0.60:
        return rng.choice(EL_WORDS)
    if r < 0.63:
        return rng.choice(HI_WORDS)
    if r < 0.66:
        return rng.choice(TH_WORDS)
    if r < 0.74:
        return number(rng)
    if r < 0.80:
        return rng.choice(EMOJI) * rng.choice([1, 1, 1, 2, 3])
    if r < 0.84:  # base letter (or not) with a stack of combining marks
        base = rng.choice(["e", "a", "Z", " ", "1", "中", "", "-", "\n"])
        return base + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 6)))
    if r < 0.88:
        return rng.choice(SPECIAL_TOKENS) if rng.random() < 0.8 else rng.choice(NEAR_MISSES)
    if r < 0.92:
        return "".join(random_char(rng) for _ in range(rng.randint(1, 6)))
    if r < 0.96:
        return rng.choice(["'s", "'t", "'re", "don't", "I'm", ".com", "--flag", "#include", "$HOME", "@user",
                           "a_b", "x+=1", "(foo)", "[bar]", "{baz}", "~/.bashrc", "http://x.y/z?q=1&r=2", "!!!",
                           "...", "?!", "»«", "„“", "¿Qué?", "¡Hola!", "C++", "‐", "—", "・", "〜"])
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 12)))


def generated_doc(rng):
    parts = []
    if rng.random() < 0.2:
        parts.append(rng.choice(SPACES) * rng.randint(1, 3))  # leading whitespace
    for _ in range(rng.randint(20, 600)):
        parts.append(word(rng))
        r = rng.random()
        if r < 0.55:
            parts.append(" ")
        elif r < 0.75:
            pass  # no separator: scripts and numbers run into each other
        elif r < 0.97:
            parts.append(rng.choice(SPACES))
        else:
            parts.append(rng.choice([" ", "\t", "\n", "\u3000"]) * rng.randint(2, 300))
    if rng.random() < 0.2:
        parts.append(rng.choice(SPACES) * rng.randint(1, 4))  # trailing whitespace
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=6.0, help="approximate corpus size in MB of UTF-8 text")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total = int(args.mb * 1e6)
    docs = english_docs(rng, total * 0.30) + code_docs(rng, total * 0.25)
    size = sum(len(d.encode()) for d in docs)
    while size < total:
        d = generated_doc(rng)
        docs.append(d)
        size += len(d.encode())
    # Edge documents: empty-ish, whitespace-only, tokens only, long runs.
    docs += ["", " ", "\n", "\r\n", "  \n", "\t", "a", "1", "1234567", "中", " 中", "<｜end▁of▁sentence｜>",
             "<｜end▁of▁sentence｜><｜end▁of▁sentence｜>", " <｜User｜> ", "x" * 5000, " " * 3000, "\n" * 500,
             "9" * 1001, "😀" * 300, "\u0301" * 40, "a\u0301" * 200, "\r" * 10 + "x", "\u3000" * 7 + "y"]
    rng.shuffle(docs)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"make-tokenizer-corpus: {len(docs)} documents, {size / 1e6:.2f} MB -> {args.out}")


if __name__ == "__main__":
    main()
