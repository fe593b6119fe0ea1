// The worker's page of ACUTE-Eval: the onboarding comparisons on a first visit, then the
// unit's comparisons, one at a time; everything is submitted at the end.  mephisto-task's
// useMephistoTask talks to Mephisto (onboarding verdict, the unit's data, the submit).
import React from "react";
import ReactDOM from "react-dom";
import "bootstrap/dist/css/bootstrap.min.css";
import "./style.css";
import { useMephistoTask } from "mephisto-task";
import { Comparisons } from "./Comparisons.jsx";

function Message({ id, kind, children }) {
  return (
    <div className="container acute-page">
      <div className={"alert alert-" + kind} id={id}>{children}</div>
    </div>
  );
}

function Description({ html }) {
  return <div className="task-description" dangerouslySetInnerHTML={{ __html: html || "" }} />;
}

function App() {
  const task = useMephistoTask();
  const [sent, setSent] = React.useState(false);
  const config = task.taskConfig || {};

  if (task.blockedReason) {
    return (
      <Message id="blocked" kind="danger">
        {task.blockedReason === "null_agent_id" && /not currently qualified/.test(task.blockedExplanation || "")
          ? "Sorry, you cannot work on this task: the practice comparisons were not answered right " +
            "(or your account lacks the task's qualifications). Please return it."
          : task.blockedExplanation || "This task is not available to you now."}
      </Message>
    );
  }
  if (task.isPreview) {
    return (
      <div className="container acute-page" id="preview">
        <h3>{config.task_title || "Compare two conversations"}</h3>
        <Description html={config.task_description} />
      </div>
    );
  }
  if (task.isLoading || !task.initialTaskData) {
    return <Message id="loading" kind="info">Loading the conversations…</Message>;
  }
  if (sent) {
    return <Message id="submitted" kind="success">Thank you: your answers were sent.</Message>;
  }
  const data = task.initialTaskData;
  const comparisons = data.comparisons || [];
  function submit(judgments) {
    if (!task.isOnboarding) setSent(true);
    task.handleSubmit({ judgments });
  }
  return (
    <div className="container acute-page">
      <Description html={config.task_description} />
      {task.isOnboarding ? <p className="lead" id="onboarding-intro">{data.intro}</p> : null}
      {comparisons.length ? (
        <Comparisons
          key={task.isOnboarding ? "onboarding" : "task"}
          comparisons={comparisons}
          onboarding={task.isOnboarding}
          minReasonWords={config.min_reason_words || 0}
          onSubmit={submit}
        />
      ) : (
        <div>
          <p id="nothing-left">There is nothing left for you to compare: thank you.</p>
          <button className="btn btn-primary" id="submit-empty" onClick={() => submit([])}>Finish</button>
        </div>
      )}
    </div>
  );
}

ReactDOM.render(<App />, document.getElementById("app"));
