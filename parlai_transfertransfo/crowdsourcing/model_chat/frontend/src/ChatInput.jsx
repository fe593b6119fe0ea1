import React from "react";

function countWords(text) {
  return text.trim().split(/\s+/).filter((w) => w.length > 0).length;
}

// Checkboxes about the partner's last message (ParlAI model_chat's per-turn annotations).
function Annotations({ buckets, question, checked, onChange }) {
  return (
    <div className="annotations" id="annotations">
      <p><b>{question}</b></p>
      {buckets.map((bucket) => (
        <label className="checkbox-inline" key={bucket.value} title={bucket.description || ""}>
          <input
            type="checkbox"
            name={"annotation-" + bucket.value}
            checked={!!checked[bucket.value]}
            onChange={(e) => onChange({ ...checked, [bucket.value]: e.target.checked })}
          />{" "}
          {bucket.name}
        </label>
      ))}
    </div>
  );
}

// The message box: refuses empty or too short messages with a message of its own.
export function ChatInput({ taskContext, active, onMessageSend }) {
  const [text, setText] = React.useState("");
  const [error, setError] = React.useState(null);
  const [checked, setChecked] = React.useState({});
  const [sending, setSending] = React.useState(false);
  const minWords = taskContext.min_words || 1;
  const buckets = taskContext.annotation_buckets;
  const annotate = buckets && taskContext.annotate_partner_message;

  function send() {
    if (!active || sending) return;
    const words = countWords(text);
    if (words === 0) {
      setError("Please write a message first.");
      return;
    }
    if (words < minWords) {
      setError(`Please write at least ${minWords} words: your message has ${words}.`);
      return;
    }
    if (annotate && !Object.values(checked).some((v) => v)) {
      setError("Please tick at least one box about your partner's last message.");
      return;
    }
    const task_data = annotate ? { annotations: checked } : {};
    setSending(true);
    onMessageSend({ text: text.trim(), task_data }).then(() => {
      setText("");
      setChecked({});
      setError(null);
      setSending(false);
    });
  }

  return (
    <div className="response-pane" id="chat-input">
      {annotate ? (
        <Annotations buckets={buckets} question={taskContext.annotation_question} checked={checked} onChange={setChecked} />
      ) : null}
      <div className="input-group">
        <input
          type="text"
          className="form-control"
          id="message-text"
          placeholder={active ? "Type your message" : "Please wait for your partner"}
          value={text}
          disabled={!active || sending}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => (e.key === "Enter" ? send() : null)}
        />
        <span className="input-group-btn">
          <button className="btn btn-primary" id="send-message" disabled={!active || sending} onClick={send}>
            Send
          </button>
        </span>
      </div>
      {error ? <div className="alert alert-danger" id="input-error">{error}</div> : null}
    </div>
  );
}
