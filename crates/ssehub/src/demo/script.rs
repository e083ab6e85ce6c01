//! The scripted answerer's text: in the question's language, on its
//! subject, deterministic (an answer a restart interrupted is continued
//! from the same text). A stand-in for a model: `--llm-url` relays a real
//! one.

/// Languages the script is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    English,
    Chinese,
    Japanese,
    Spanish,
    French,
    German,
}

/// What the question is about, as far as the script can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// Reconnecting, resuming, losing events.
    Resume,
    /// Server-Sent Events, EventSource, streaming.
    Streaming,
    /// Anything else.
    Other,
}

/// The whole answer to `question`.
pub fn answer(question: &str) -> String {
    let language = language_of(question);
    let subject = subject_of(question);
    let (opening, body, close) = script(language, subject);
    // Chinese and Japanese put no space
    // before the quote; each language quotes its own way, with no stray stop.
    let quoted = match language {
        Language::Chinese | Language::Japanese => format!("{opening}“{question}”"),
        Language::French => format!("{opening} « {question} »"),
        Language::German => format!("{opening} „{question}“"),
        _ => format!("{opening} “{question}”"),
    };
    format!("{quoted}\n\n{body}\n\n{close}")
}

fn language_of(question: &str) -> Language {
    let has = |range: std::ops::RangeInclusive<char>| question.chars().any(|c| range.contains(&c));
    if has('\u{3040}'..='\u{30ff}') {
        return Language::Japanese;
    }
    if has('\u{4e00}'..='\u{9fff}') {
        return Language::Chinese;
    }
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    // Words that are common in one language and rare in English or the
    // others; the language with the most wins, English when none.
    let count = |list: &[&str]| words.iter().filter(|w| list.contains(w)).count();
    let mut scores = [
        (
            Language::Spanish,
            count(&[
                "qué",
                "cómo",
                "cuál",
                "por",
                "el",
                "la",
                "los",
                "las",
                "una",
                "es",
                "son",
                "funciona",
                "conexión",
                "explica",
                "explícame",
                "dime",
                "hola",
                "gracias",
                "eventos",
                "servidor",
            ]) + 2 * usize::from(lower.contains('¿') || lower.contains('ñ')),
        ),
        (
            Language::French,
            count(&[
                "quoi",
                "comment",
                "pourquoi",
                "qu",
                "est",
                "le",
                "les",
                "une",
                "des",
                "ce",
                "fonctionne",
                "connexion",
                "explique",
                "moi",
                "plaît",
                "bonjour",
                "merci",
                "événements",
                "serveur",
                "sont",
            ]) + usize::from(
                lower.contains('ç') || lower.contains("s'il") || lower.contains("s’il"),
            ),
        ),
        (
            Language::German,
            count(&[
                "was",
                "wie",
                "warum",
                "ist",
                "sind",
                "der",
                "die",
                "das",
                "ein",
                "eine",
                "und",
                "funktioniert",
                "verbindung",
                "erklär",
                "erkläre",
                "mir",
                "bitte",
                "geht",
                "dir",
                "ereignisse",
                "vom",
                "mit",
            ]) + usize::from(
                lower.contains('ß')
                    || lower.contains('ü')
                    || lower.contains('ö')
                    || lower.contains('ä'),
            ),
        ),
    ];
    // "was" is also English: it counts for German only beside another.
    if words.contains(&"was") && scores[2].1 == 1 {
        scores[2].1 = 0;
    }
    let (best, score) = scores
        .into_iter()
        .max_by_key(|(_, score)| *score)
        .expect("three languages");
    let english = count(&[
        "what", "how", "why", "is", "are", "the", "does", "do", "can", "you", "explain", "tell",
    ]);
    if score > english {
        best
    } else {
        Language::English
    }
}

fn subject_of(question: &str) -> Subject {
    let lower = question.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if any(&[
        "reconnect",
        "resume",
        "lost",
        "drop",
        "offline",
        "restart",
        "重连",
        "断线",
        "丢",
        "再接続",
        "切断",
        "reconex",
        "perd",
        "reconnex",
        "coupure",
        "wiederverbind",
        "verlor",
        "abbruch",
    ]) {
        Subject::Resume
    } else if any(&[
        "sse",
        "server-sent",
        "eventsource",
        "stream",
        "push",
        "推送",
        "流",
        "ストリーム",
        "transmis",
        "flux",
        "übertrag",
    ]) {
        Subject::Streaming
    } else {
        Subject::Other
    }
}

/// Opening (before the question), body, and closing line.
fn script(language: Language, subject: Subject) -> (&'static str, &'static str, &'static str) {
    use Language::*;
    use Subject::*;
    match (language, subject) {
        (English, Resume) => (
            "You asked:",
            "When a connection drops, the browser reconnects by itself and sends the id of the \
             last event it received (Last-Event-ID). The hub replays exactly what came after it, \
             in order, so nothing is lost and nothing is shown twice. If history no longer covers \
             the gap, the hub says so with a reset event instead of leaving a silent hole.",
            "Try it: stop the hub while this answer streams, start it again, and watch it continue.",
        ),
        (English, Streaming) => (
            "You asked:",
            "Server-Sent Events keep one HTTP response open and write each update as a small \
             text event. The browser's EventSource reads them, one fragment at a time, as you \
             see here. The hub fans each event out to every subscriber of its topic, and keeps \
             the newest ones so a late or returning reader can catch up.",
            "That is the whole answer.",
        ),
        (English, Other) => (
            "You asked:",
            "This is the demo's scripted answer, streamed one fragment at a time. The hub keeps \
             one HTTP response open and writes each fragment as an event; if the connection \
             drops, the browser reconnects with Last-Event-ID and the hub replays exactly what \
             was missed: nothing lost, nothing repeated. Start the hub with --llm-url to have a \
             real model answer instead.",
            "That is the whole answer.",
        ),
        (Chinese, Resume) => (
            "你的问题是：",
            "连接断开时，浏览器会自动重连，并带上它收到的最后一个事件的编号（Last-Event-ID）。\
             服务器按顺序补发之后的所有事件，所以不会丢失，也不会重复。如果历史记录已经不够，\
             服务器会发送 reset 事件明确告知，而不是悄悄留下空缺。",
            "试试看：在回答输出时停止服务器，再重新启动，回答会接着继续。",
        ),
        (Chinese, Streaming) => (
            "你的问题是：",
            "服务器推送事件（SSE）保持一个 HTTP 响应不断开，把每次更新写成一个小小的文本事件。\
             浏览器的 EventSource 逐段读取，就像你现在看到的这样。服务器把每个事件分发给订阅\
             该主题的所有人，并保留最新的事件，让晚到或重连的读者能够补上。",
            "回答完毕。",
        ),
        (Chinese, Other) => (
            "你的问题是：",
            "这是演示用的脚本回答，一段一段地推送给你。服务器保持一个 HTTP 响应不断开，每个片段\
             都作为一个事件写出；即使连接中断，浏览器也会带着 Last-Event-ID 重连，服务器只补发\
             缺少的部分——不丢失，不重复。用 --llm-url 启动服务器，就能让真正的模型来回答。",
            "回答完毕。",
        ),
        (Japanese, Resume) => (
            "ご質問：",
            "接続が切れると、ブラウザは自動で再接続し、最後に受け取ったイベントの ID \
             （Last-Event-ID）を送ります。サーバーはその後のイベントを順番どおりに再送するので、\
             欠けることも重複することもありません。",
            "回答は以上です。",
        ),
        (Japanese, Streaming | Other) => (
            "ご質問：",
            "Server-Sent Events は HTTP のレスポンスを開いたままにして、更新ごとに小さなテキストの\
             イベントを書き出します。ブラウザの EventSource がそれを一つずつ読み取ります。いま\
             ご覧のとおりです。",
            "回答は以上です。",
        ),
        (Spanish, Resume) => (
            "Preguntaste:",
            "Cuando la conexión se corta, el navegador se reconecta solo y envía el id del último \
             evento recibido (Last-Event-ID). El hub reenvía exactamente lo que vino después, en \
             orden: no se pierde nada y nada se repite.",
            "Esa es toda la respuesta.",
        ),
        (Spanish, Streaming | Other) => (
            "Preguntaste:",
            "Esta respuesta llega fragmento a fragmento. Server-Sent Events mantiene abierta una \
             respuesta HTTP y escribe cada actualización como un pequeño evento de texto, que el \
             EventSource del navegador lee a medida que llega.",
            "Esa es toda la respuesta.",
        ),
        (French, Resume) => (
            "Vous avez demandé :",
            "Quand la connexion tombe, le navigateur se reconnecte tout seul et envoie l’id du \
             dernier événement reçu (Last-Event-ID). Le hub renvoie exactement ce qui a suivi, dans \
             l’ordre : rien n’est perdu, rien n’est répété.",
            "C’est toute la réponse.",
        ),
        (French, Streaming | Other) => (
            "Vous avez demandé :",
            "Cette réponse arrive fragment par fragment. Server-Sent Events garde une réponse HTTP \
             ouverte et écrit chaque mise à jour comme un petit événement texte, que l’EventSource \
             du navigateur lit au fur et à mesure.",
            "C’est toute la réponse.",
        ),
        (German, Resume) => (
            "Du hast gefragt:",
            "Bricht die Verbindung ab, verbindet sich der Browser von selbst neu und sendet die Id \
             des letzten empfangenen Ereignisses (Last-Event-ID). Der Hub sendet genau das, was \
             danach kam, in der richtigen Reihenfolge: nichts geht verloren, nichts doppelt.",
            "Das ist die ganze Antwort.",
        ),
        (German, Streaming | Other) => (
            "Du hast gefragt:",
            "Diese Antwort kommt Stück für Stück. Server-Sent Events hält eine HTTP-Antwort offen \
             und schreibt jede Änderung als kleines Text-Ereignis, das die EventSource des \
             Browsers liest, sobald es ankommt.",
            "Das ist die ganze Antwort.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_in_the_question_s_language_and_on_its_subject() {
        for (question, language) in [
            ("why SSE?", Language::English),
            ("为什么断线后不会丢消息？", Language::Chinese),
            ("SSE とは何ですか", Language::Japanese),
            ("¿Cómo funciona la reconexión?", Language::Spanish),
            ("Comment fonctionne la reconnexion ?", Language::French),
            ("Wie funktioniert die Verbindung?", Language::German),
            ("What is the capital of France?", Language::English),
            ("Was sind Server-Sent Events?", Language::German),
            ("Erklär mir bitte SSE", Language::German),
            ("Wie geht es dir?", Language::German),
            ("Explique-moi SSE s'il te plaît", Language::French),
            ("What was that?", Language::English),
        ] {
            assert_eq!(language_of(question), language, "{question}");
        }
        assert_eq!(subject_of("为什么断线后不会丢消息？"), Subject::Resume);
        assert_eq!(subject_of("what is SSE?"), Subject::Streaming);
        assert_eq!(subject_of("tell me a joke"), Subject::Other);
        let zh = answer("为什么断线后不会丢消息？");
        assert!(
            zh.starts_with("你的问题是：“为什么断线后不会丢消息？”\n"),
            "{zh}"
        );
        assert!(zh.contains("不会丢失"), "{zh}");
        assert!(!zh.contains("the"), "{zh}");
        assert!(answer("why SSE?").contains("Server-Sent Events keep"));
    }
}
