import React from "react";

// The onboarding check: a few multiple-choice questions about the task.  The answers are
// checked by the server, which never sends them to the page.
export function Onboarding({ onboarding, active, onMessageSend }) {
  const [answers, setAnswers] = React.useState({});
  const [sent, setSent] = React.useState(false);
  const [error, setError] = React.useState(null);

  if (onboarding.result === "fail") {
    return (
      <div className="alert alert-danger" id="onboarding-failed">
        Sorry, your answers were not right, so you cannot work on this task. Please return it.
      </div>
    );
  }
  function submit() {
    if (onboarding.questions.some((_, i) => answers[i] === undefined)) {
      setError("Please answer every question.");
      return;
    }
    setSent(true);
    onMessageSend({ text: "", task_data: { onboarding_answers: onboarding.questions.map((_, i) => answers[i]) } });
  }
  return (
    <div className="response-pane" id="onboarding">
      <p className="lead">{onboarding.intro}</p>
      {onboarding.questions.map((q, i) => (
        <div className="form-group onboarding-question" key={i}>
          <p><b>{q.question}</b></p>
          {q.options.map((option, j) => (
            <div className="radio" key={j}>
              <label>
                <input type="radio" name={"onboarding-" + i} value={j} checked={answers[i] === j} onChange={() => setAnswers({ ...answers, [i]: j })} />{" "}
                {option}
              </label>
            </div>
          ))}
        </div>
      ))}
      <button className="btn btn-primary" id="submit-onboarding" disabled={!active || sent} onClick={submit}>
        Submit
      </button>
      {error ? <div className="alert alert-danger">{error}</div> : null}
    </div>
  );
}
